"""A run killed mid-training (kill -9) resumes from its last finished epoch when rerun; a grid whose
base weights were lost resumes only with bases that reproduce their records."""
import json
import signal
import time

from helpers import only_result, run_tfxfer, tfxfer, write_config

EPOCHS = 12


def test_killed_run_resumes_and_finishes_like_an_uninterrupted_one(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "runs", recipe={"epochs": EPOCHS})
    args = ("train", "--config", cfg, "--treatment", "baseB", "--quiet")
    proc = tfxfer(*args)
    history = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("*/checkpoints/checkpoint"))
        if found:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = found[0].parent.parent
    assert not (run_dir / "result.json").exists()
    history = json.loads((run_dir / "history.json").read_text())
    assert 1 <= len(history) < EPOCHS

    resumed = run_tfxfer(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    record = only_result(tmp_path / "runs")
    assert record["epochs"] == EPOCHS

    # The same seed without the interruption: the same record shape and the same test accuracy.
    cfg2 = write_config(tmp_path / "c2.yaml", tmp_path / "runs2", recipe={"epochs": EPOCHS})
    straight = run_tfxfer("train", "--config", cfg2, "--treatment", "baseB", "--quiet")
    assert straight.returncode == 0, straight.stderr
    reference = only_result(tmp_path / "runs2")
    assert reference.keys() == record.keys()
    assert reference["run_id"] == record["run_id"]
    assert abs(reference["top1"] - record["top1"]) < 1e-9, (reference["top1"], record["top1"])
    assert reference["weights_sha256"] == record["weights_sha256"]  # to the bit: what --reproduce-bases needs


def test_a_finished_base_without_its_weights_is_one_line_exit_2_and_the_dependent_run_is_not_started(tmp_path,
                                                                                                       capsys):
    import pytest

    from conftest import tiny_config
    from tfxfer.cli import main
    from tfxfer.runs.spec import RunSpec

    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", out)
    base = RunSpec("BnB", 1, tiny_config(tmp_path)).base
    (out / base.run_id).mkdir(parents=True)
    (out / base.run_id / "result.json").write_text(json.dumps({"run_id": base.run_id, "top1": 0.5}))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(cfg), "--treatment", "BnB", "--n", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"copies from {base.run_id}, which finished but has no weights" in err
    assert f"{out / base.run_id / 'model.weights.h5'} is missing" in err
    assert sorted(p.name for p in out.iterdir()) == [base.run_id]  # nothing of BnB1 was written
    assert sorted(p.name for p in (out / base.run_id).iterdir()) == ["result.json"]


def test_a_grid_whose_base_weights_were_lost_goes_on_only_with_a_base_that_reproduces_its_record(tmp_path, capsys):
    import pytest

    from tfxfer.cli import main

    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", out, experiment={"treatments": ["BnB"], "n": [1]})

    def experiment(*flags):
        with pytest.raises(SystemExit) as exit_info:
            main(["experiment", str(cfg), "--quiet", *flags])
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out, captured.err.strip()

    assert experiment()[0] in (0, None)
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    base_id = next(r for r in records if r.startswith("baseB"))
    dependent = next(r for r in records if r.startswith("BnB1"))
    base = records[base_id]
    # Carried elsewhere as the committed results are: records only; BnB1 still to train.
    weights = out / base_id / "model.weights.h5"
    weights.unlink()
    for p in (out / dependent).iterdir():
        p.unlink() if p.is_file() else __import__("shutil").rmtree(p)
    (out / dependent).rmdir()

    code, _, err = experiment()
    assert code == 2 and len(err.splitlines()) == 1 and base_id in err and "--reproduce-bases" in err, err
    assert not (out / dependent).exists() and not weights.exists()

    # A record the retrained net does not match (here: edited) restores nothing and trains nothing.
    (out / base_id / "result.json").write_text(json.dumps({**base, "weights_sha256": "0" * 64}))
    code, _, err = experiment("--reproduce-bases")
    assert code == 2 and len(err.splitlines()) == 1 and "does not reproduce its record: weights_sha256" in err, err
    assert not weights.exists() and not (out / dependent).exists() and not list((out / ".reproduce").iterdir())
    # An older record without a digest is checked on its numbers.
    older = {k: v for k, v in base.items() if k != "weights_sha256"}
    (out / base_id / "result.json").write_text(json.dumps({**older, "top1": base["top1"] + 0.25}))
    code, _, err = experiment("--reproduce-bases")
    assert code == 2 and f"top1 {base['top1']} vs {base['top1'] + 0.25} recorded" in err, err

    # The true record: retrained to the same bits, its weights restored, and the grid finished from them.
    (out / base_id / "result.json").write_text(json.dumps(base))
    code, stdout, err = experiment("--reproduce-bases")
    assert code in (0, None), err
    assert f"{base_id}: retrained, reproduces its record (weights_sha256); weights restored" in stdout
    assert weights.is_file() and json.loads((out / base_id / "result.json").read_text()) == base
    finished = json.loads((out / dependent / "result.json").read_text())
    assert finished["base_weights_sha256"] == base["weights_sha256"]
    assert finished == records[dependent] | {"wall_s": finished["wall_s"], "images_per_s": finished["images_per_s"]}
