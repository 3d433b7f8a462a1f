"""The grid: planning, claims, resuming after kill -9, and two processes sharing one directory."""
import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import tiny_config
from helpers import run_tfxfer, tfxfer, write_config
from tfxfer.errors import UserError
from tfxfer.experiments.claims import CLAIM_FILE, read_claim, try_claim
from tfxfer.experiments.grid import Progress
from tfxfer.experiments.planner import plan_experiment

GRID = {"splits": [{"kind": "random", "seed": 0}], "treatments": ["BnB", "AnB"], "n": [1, 3]}


def test_plan_orders_bases_first_and_skips_finished(tmp_path):
    cfg = tiny_config(tmp_path, experiment={**GRID, "splits": [{"kind": "random", "seed": 0},
                                                              {"kind": "random", "seed": 1}]})
    plan = plan_experiment(cfg)
    assert len(plan.runs) == 2 * (2 + 4)
    position = {r.run_id: i for i, r in enumerate(plan.runs)}
    for r in plan.runs:
        base = plan.deps[r.run_id]
        assert (base is None) == r.treatment.startswith("base")
        if base:
            assert position[base] < position[r.run_id]
    bases = [r for r in plan.runs if r.treatment.startswith("base")]
    assert {r.config.split.seed for r in bases} == {0, 1} and len(bases) == 4
    # Nothing is ready before its base; a finished base makes its treatments ready.
    assert {r.run_id for r in plan.ready(set())} == {r.run_id for r in bases}
    out = tmp_path / "runs"
    (out / bases[0].run_id).mkdir(parents=True)
    (out / bases[0].run_id / "result.json").write_text("{}")
    finished = plan.finished(out)
    assert finished == {bases[0].run_id}
    ready = {r.run_id for r in plan.ready(finished)}
    assert bases[0].run_id not in ready
    assert {r.run_id for r in plan.runs if plan.deps[r.run_id] == bases[0].run_id} <= ready


def test_runs_that_copy_a_base_come_before_runs_that_need_no_weights(tmp_path):
    # A grid cut short (a session's end) has then used every base it trained, on the cheap frozen
    # runs first: the random control and the equal-training base copy nothing and can be trained
    # anywhere later.
    cfg = tiny_config(tmp_path, experiment={**GRID, "treatments": ["random", "BnB+", "BnB"], "n": [1, 2],
                                            "controls": ["BnB+"]})
    order = [r.treatment for r in plan_experiment(cfg).runs]
    assert order == ["baseB", "BnB", "BnB", "BnB+", "BnB+", "random", "random", "baseB-long"], order


def test_eta_prices_each_run_left_at_what_its_kind_took(tmp_path):
    plan = plan_experiment(tiny_config(tmp_path, experiment=GRID))  # baseA, baseB, BnB and AnB at n = 1, 3
    out = tmp_path / "runs"
    ids = {(r.treatment, r.n): r.run_id for r in plan.runs}
    took = {("baseA", 0): 120.0, ("baseB", 0): 100.0, ("BnB", 1): 50.0, ("BnB", 3): 5.0}
    for key, wall_s in took.items():
        (out / ids[key]).mkdir(parents=True)
        (out / ids[key] / "result.json").write_text(json.dumps({"wall_s": wall_s}))
    # AnB1 and AnB3 are left: frozen runs at n = 1 and 3 took 50 s and 5 s, so 55 s — not the
    # 68.75 s a mean over all four finished runs would say for each.
    line = Progress(plan, out).line()
    assert "4/6 done, 0 running, 2 waiting" in line and line.endswith("ETA 0m55s")
    # A kind with no finished run yet is priced at the mean of all finished runs.
    (out / ids[("BnB", 3)] / "result.json").unlink()
    (out / ids[("AnB", 1)]).mkdir()
    (out / ids[("AnB", 1)] / "result.json").write_text(json.dumps({"wall_s": 30.0}))
    assert Progress(plan, out).line().endswith("ETA 2m30s")  # BnB3 and AnB3: (120 + 100 + 50 + 30) / 4 each


def test_a_split_entry_may_narrow_the_grid_for_itself(tmp_path):
    dissimilar = {"kind": "dissimilar", "A": "vehicles", "B": "animals", "treatments": ["AnB", "BnA"], "n": [2]}
    cfg = tiny_config(tmp_path, experiment={**GRID, "splits": [{"kind": "random", "seed": 0}, dissimilar]})
    planned = {(r.treatment, r.n, r.config.split.kind) for r in plan_experiment(cfg).runs}
    assert planned == {("baseA", 0, "random"), ("baseB", 0, "random"), ("BnB", 1, "random"), ("BnB", 3, "random"),
                       ("AnB", 1, "random"), ("AnB", 3, "random"),
                       ("baseA", 0, "dissimilar"), ("baseB", 0, "dissimilar"), ("AnB", 2, "dissimilar"),
                       ("BnA", 2, "dissimilar")}
    for bad, message in ((["AnB", "CnD"], "experiment.splits[1].treatments: 'CnD' is not allowed"),
                         ("AnB", "experiment.splits[1].treatments: 'AnB' is not allowed; expected a list")):
        with pytest.raises(UserError, match=re.escape(message)):
            tiny_config(tmp_path, experiment={**GRID, "splits": [{"kind": "random", "seed": 0},
                                                                 {**dissimilar, "treatments": bad}]})
    # One split's grid at a time (a session each), and only splits that exist.
    only = {(r.treatment, r.n, r.config.split.kind) for r in plan_experiment(cfg, only=[1]).runs}
    assert only == {p for p in planned if p[2] == "dissimilar"}
    with pytest.raises(UserError, match=re.escape("split 2 is not allowed; expected an index into "
                                                  "experiment.splits, 0..1")):
        plan_experiment(cfg, only=[2])
    with pytest.raises(UserError, match=re.escape("experiment.splits[0].n: 8 is not allowed")):
        tiny_config(tmp_path, experiment={**GRID, "splits": [{"kind": "random", "seed": 0, "n": [8]}]})


def test_one_split_per_session_keeps_the_whole_plan_for_the_report(tmp_path):
    from tfxfer.cli import main
    from tfxfer.report import write_report

    out = tmp_path / "runs"
    dissimilar = {"kind": "dissimilar", "A": "shapes", "B": "textures", "treatments": ["AnB"], "n": [2]}
    cfg = write_config(tmp_path / "c.yaml", out, recipe={"epochs": 1},
                       experiment={**GRID, "splits": [{"kind": "random", "seed": 0}, dissimilar]})
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(cfg), "--split", "1", "--quiet"])
    assert exc.value.code in (0, None)
    finished = {p.parent.name for p in out.glob("*/result.json")}
    planned = {p["run_id"] for p in json.loads((out / "plan.json").read_text())}
    assert len(finished) == 3 and len(planned) == 3 + 6 and finished < planned
    write_report(out)
    assert "6 planned runs missing" in (out / "report.md").read_text()


def test_claims_exclude_each_other_and_dead_holders_are_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    first = try_claim(run_dir, lease_s=30)
    assert first is not None and try_claim(run_dir, lease_s=30) is None
    first.release()
    assert not (run_dir / CLAIM_FILE).exists()
    # A holder on this host whose process is gone, with a lease still running.
    dead = {"id": "dead", "host": socket.gethostname(), "pid": _dead_pid(), "expires": time.time() + 600}
    (run_dir / CLAIM_FILE).write_text(json.dumps(dead))
    taken = try_claim(run_dir, lease_s=30)
    assert taken is not None and read_claim(run_dir / CLAIM_FILE)["id"] == taken.holder["id"]
    taken.release()
    # A holder on another host whose lease ran out.
    (run_dir / CLAIM_FILE).write_text(json.dumps({"id": "gone", "host": "elsewhere", "pid": 1, "expires": 0}))
    assert try_claim(run_dir, lease_s=30) is not None
    # A live holder elsewhere keeps its claim.
    (run_dir / CLAIM_FILE).unlink()
    (run_dir / CLAIM_FILE).write_text(json.dumps({"id": "live", "host": "elsewhere", "pid": 1,
                                                  "expires": time.time() + 600}))
    assert try_claim(run_dir, lease_s=30) is None


def test_lease_is_renewed_while_held(tmp_path):
    claim = try_claim(tmp_path / "run", lease_s=0.6)
    expires = read_claim(tmp_path / "run" / CLAIM_FILE)["expires"]
    time.sleep(0.5)
    assert read_claim(tmp_path / "run" / CLAIM_FILE)["expires"] > expires
    claim.release()


def _dead_pid() -> int:
    proc = os.fork()
    if proc == 0:
        os._exit(0)
    os.waitpid(proc, 0)
    return proc


def trained_by(stdout: str) -> list[str]:
    """The runs a process trained: the runner prints '<run_id>: top1 …' after each."""
    return re.findall(r"^(\S+): top1 ", stdout, flags=re.M)


def results(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}


def test_grid_killed_and_rerun_trains_each_network_once(tmp_path):
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", out, experiment=GRID, recipe={"epochs": 3})
    proc = tfxfer("experiment", cfg, "--quiet")
    deadline = time.time() + 240
    while time.time() < deadline and len(results(out)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    before = results(out)
    assert 3 <= len(before) < 6, before
    rerun = run_tfxfer("experiment", cfg, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    after = results(out)
    assert len(after) == 6
    assert all(after[r] == before[r] for r in before)  # finished runs were not redone
    assert sorted(trained_by(rerun.stdout)) == sorted(set(after) - set(before))
    for run_id in after:
        history = json.loads((out / run_id / "history.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2, 3]  # resumed, never restarted or repeated


def test_two_processes_share_one_grid_without_training_a_run_twice(tmp_path):
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", out, experiment={**GRID, "n": [1, 2, 3]}, recipe={"epochs": 2})
    procs = [tfxfer("experiment", cfg, "--quiet") for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    trained = [trained_by(stdout) for stdout, _ in outs]
    assert not set(trained[0]) & set(trained[1])
    assert sorted(trained[0] + trained[1]) == sorted(results(out))
    assert len(results(out)) == 8
    assert all(trained), trained  # both did work


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", out, experiment=GRID)
    res = run_tfxfer("experiment", cfg, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "6 runs, 0 finished" in res.stdout and "<- baseB-" in res.stdout and "<- baseA-" in res.stdout
    assert not out.exists()


def test_jobs_runs_worker_processes_on_one_grid(tmp_path):
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", out, experiment={**GRID, "treatments": ["baseA", "baseB"]},
                       recipe={"epochs": 1})
    res = run_tfxfer("experiment", cfg, "--jobs", "2")
    assert res.returncode == 0, res.stderr
    assert "[grid] 2/2 done" in res.stdout
    logs = sorted((out / "logs").glob("worker-*.log"))
    assert len(logs) == 2
    trained = [trained_by(log.read_text()) for log in logs]
    assert sorted(trained[0] + trained[1]) == sorted(results(out))  # each run trained by exactly one worker
