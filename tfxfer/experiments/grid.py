"""Running a planned grid: claim a ready run, train it, repeat until every run has a result.

Any number of these loops — `--jobs K` worker processes, other experiment processes, other hosts
sharing the output directory — can work on one grid at once: claims keep them off each other's
runs, and a run whose holder died is taken over and resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tfxfer.atomic import atomic_write_text
from tfxfer.config import Config, dump_config
from tfxfer.data.tasks import load_data
from tfxfer.experiments.claims import CLAIM_FILE, is_stale, read_claim, try_claim
from tfxfer.experiments.planner import Plan
from tfxfer.experiments.runner import reproduce, run, weights_lost
from tfxfer.runs.records import read_result
from tfxfer.treatments import get_treatment

PLAN_FILE = "plan.json"


def write_plan(plan: Plan, config: Config, out: Path) -> None:
    """The planned runs beside the results, so a report can name the ones still missing."""
    atomic_write_text(out / "experiment.yaml", dump_config(config))
    atomic_write_text(out / PLAN_FILE, json.dumps(
        [{"run_id": r.run_id, "treatment": r.treatment, "n": r.n, "split": r.config.split.kind,
          "split_seed": r.config.split.seed, "variant": r.config.arch.variant, "seed": r.config.seed,
          "base_run_id": plan.deps[r.run_id]} for r in plan.runs], indent=1))


class Progress:
    """Runs done / running / left with an ETA, from what is on disk (so it counts every process).

    The ETA prices each run left at what finished runs of its kind took (their records' wall_s):
    frozen runs by n, since the cached prefix makes them cost less the more layers they copy;
    base and fine-tuned runs alike. A grid's frozen runs can cost a hundredth of its others, so a
    mean over all runs so far would be off by a factor of two or more."""

    def __init__(self, plan: Plan, out: Path):
        self.plan, self.out = plan, out
        self.start = time.time()
        self._wall_s: dict[str, float] = {}  # a finished record does not change: read it once

    def line(self) -> str:
        done = self.plan.finished(self.out)
        running = sum(1 for r in self.plan.runs if r.run_id not in done and _claimed(self.out / r.run_id))
        left = [r for r in self.plan.runs if r.run_id not in done]
        cost: dict[object, list[float]] = {}
        for r in self.plan.runs:
            if r.run_id in done:
                if r.run_id not in self._wall_s:
                    self._wall_s[r.run_id] = read_result(self.out / r.run_id)["wall_s"]
                cost.setdefault(_cost_kind(r), []).append(self._wall_s[r.run_id])
        if not left:
            eta = "done"
        elif cost:
            every = [w for ws in cost.values() for w in ws]
            seconds = sum(sum(ws) / len(ws) for ws in (cost.get(_cost_kind(r), every) for r in left))
            eta = f"ETA {_duration(seconds / max(running, 1))}"
        else:
            eta = "ETA ?"
        return (f"[grid] {len(done)}/{len(self.plan.runs)} done, {running} running, {len(left) - running} waiting; "
                f"{_duration(time.time() - self.start)} elapsed, {eta}")


def _cost_kind(spec) -> object:
    t = get_treatment(spec.treatment)
    return ("frozen", spec.n) if not (t.is_base or t.fine_tune) else "trained in full"


def _claimed(run_dir: Path) -> bool:
    claim = read_claim(run_dir / CLAIM_FILE)
    return claim is not None and not is_stale(claim)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _data_key(spec) -> str:
    cfg = spec.config.to_dict()
    del cfg["arch"]["variant"]  # an arch's variants read the same images (runner.run builds each's layers)
    # A model file's input size decides the image size as an arch's does.
    return json.dumps([cfg[k] for k in ("dataset", "split", "arch")] + [cfg["base_model"]["input_size"]],
                      sort_keys=True)


def load_all(plan: Plan) -> dict[str, tuple]:
    """The dataset and each split, loaded once for all their runs; bad data settings fail here,
    before anything is written."""
    loaded: dict[str, tuple] = {}
    for spec in plan.runs:
        if _data_key(spec) not in loaded:
            loaded[_data_key(spec)] = load_data(spec.config)
    return loaded


def lost_bases(plan: Plan, out: Path) -> list:
    """Finished bases without their weights file that unfinished runs of the plan still copy from
    (e.g. a grid's records carried to another machine without the weights, which are never committed)."""
    done = plan.finished(out)
    needed = {base for run_id, base in plan.deps.items() if base is not None and run_id not in done}
    return [r for r in plan.runs if r.run_id in needed and weights_lost(out / r.run_id)]


def reproduce_lost_bases(plan: Plan, out: Path, loaded: dict[str, tuple], verbose: bool = False) -> None:
    """Retrain each of `lost_bases` and restore its weights where it reproduces its record (runner.reproduce)."""
    for spec in lost_bases(plan, out):
        reproduce(spec, out, loaded[_data_key(spec)], verbose)


def run_grid(plan: Plan, out: Path, loaded: dict[str, tuple] | None = None, *, lease_s: float = 120.0,
             poll_s: float = 2.0, verbose: bool = False) -> int:
    """Work on the grid in this process until every run has a result; returns how many it trained."""
    progress = Progress(plan, out)
    loaded = loaded if loaded is not None else load_all(plan)
    trained = 0
    while True:
        done = plan.finished(out)
        if len(done) == len(plan.runs):
            return trained
        for spec in plan.ready(done):
            claim = try_claim(out / spec.run_id, lease_s)
            if claim is None:
                continue
            with claim:
                if read_result(out / spec.run_id) is None:
                    print(progress.line(), flush=True)
                    run(spec, out, loaded=loaded[_data_key(spec)], verbose=verbose)
                    trained += 1
            break  # finished runs may have made others ready: look again from the top
        else:
            time.sleep(poll_s)  # what is left is claimed by others, or waits on a base in progress


def run_workers(config_path: str, flags: list[str], plan: Plan, out: Path, jobs: int,
                poll_s: float = 5.0) -> list[int]:
    """`--jobs K`: K worker processes on the same grid, each on its own GPU(s) when there are GPUs.

    Returns the indexes of workers that failed (their logs are <out>/logs/worker-<i>.log)."""
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(jobs):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(gpus) if g % jobs == i)
        log = open(logs / f"worker-{i}.log", "a")
        procs.append((subprocess.Popen([sys.executable, "-m", "tfxfer", "experiment", config_path, *flags,
                                        "--jobs", "1", "--quiet"], env=env, stdout=log, stderr=subprocess.STDOUT),
                      log))
    progress = Progress(plan, out)
    try:
        while any(p.poll() is None for p, _ in procs):
            print(progress.line(), flush=True)
            time.sleep(poll_s)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.terminate()
            p.wait()
            log.close()
    print(progress.line(), flush=True)
    return [i for i, (p, _) in enumerate(procs) if p.returncode != 0]
