"""A run killed mid-training (kill -9) resumes from its last finished epoch when rerun."""
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
