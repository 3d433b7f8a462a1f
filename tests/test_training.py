"""One base net end to end: it learns, and leaves the run directory DESIGN.md describes."""
import json

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_config
from tfxfer.experiments.runner import run
from tfxfer.runs.records import RESULT_FIELDS
from tfxfer.runs.spec import RunSpec


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    cfg = tiny_config(tmp, recipe={"epochs": 4})
    record = run(RunSpec("baseB", None, cfg), verbose=False)
    return record, tmp / "runs" / record["run_id"]


def test_base_net_beats_chance_by_a_wide_margin(base_run):
    record, _ = base_run
    chance = 1 / len(record["classes"])
    assert record["top1"] > 3 * chance, record["top1"]
    assert record["top5"] > record["top1"]
    assert record["best_val_top1"] > 3 * chance


def test_result_record_fields(base_run):
    record, run_dir = base_run
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert list(on_disk) == list(RESULT_FIELDS)
    assert on_disk["n"] == 0 and on_disk["base_run_id"] is None and on_disk["treatment"] == "baseB"
    assert on_disk["epochs"] == 4 and on_disk["wall_s"] > 0 and on_disk["images_per_s"] > 0
    assert on_disk["config"]["recipe"]["epochs"] == 4 and on_disk["device"] == "cpu"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "model.weights.h5").is_file()


def test_records_carry_the_digest_of_the_weights_they_hold_and_copied(base_run):
    from tfxfer.data.tasks import arch_spec
    from tfxfer.models import build_model
    from tfxfer.runs.records import weights_sha256

    record, run_dir = base_run
    assert len(record["weights_sha256"]) == 64 and record["base_weights_sha256"] is None
    cfg = tiny_config(run_dir.parent.parent, recipe={"epochs": 4})
    spec = RunSpec("BnB", 1, cfg)
    assert spec.base.run_id == record["run_id"]
    frozen = run(spec, verbose=False)  # the base is reused: what it copies is the file on disk
    assert frozen["base_weights_sha256"] == record["weights_sha256"]
    assert frozen["weights_sha256"] != record["weights_sha256"]  # its fc8 and layers 2..8 were retrained
    # The digest is the weights' values, not the file's: the file read back gives the record's digest.
    loaded = build_model(arch_spec(cfg), len(record["classes"]))
    loaded.load_weights(run_dir / "model.weights.h5")
    assert weights_sha256(loaded) == record["weights_sha256"]


def test_tensorboard_has_scalars_filters_and_hparams(base_run):
    _, run_dir = base_run
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0}).Reload()
    tags = acc.Tags()["tensors"]
    for tag in ("train_loss", "train_top1", "val_loss", "val_top1", "lr", "conv1/filters"):
        assert tag in tags, tags
    assert len(acc.Tensors("val_top1")) == 4
    kernels = acc.Tensors("conv1/kernel")
    assert [k.step for k in kernels] == [1, 2, 3, 4]
    assert tf.make_ndarray(kernels[0].tensor_proto).shape[:3] == (5, 5, 3)
    assert "_hparams_/session_start_info" in tags


def test_finished_run_is_reused_not_retrained(base_run, capsys):
    record, run_dir = base_run
    cfg = tiny_config(run_dir.parent.parent, recipe={"epochs": 4})
    again = run(RunSpec("baseB", 0, cfg))
    assert again == json.loads((run_dir / "result.json").read_text())
    assert "reusing" in capsys.readouterr().out


def test_finished_run_loads_back_with_its_preprocessing(base_run):
    import numpy as np

    from tfxfer.runs.finished import load_run

    record, run_dir = base_run
    run = load_run(run_dir)
    assert run.record == record and run.class_names == record["classes"]
    assert run.spec.input_size == 32 and len(run.norm.mean) == 3 and all(s > 0 for s in run.norm.std)
    x = np.zeros((1, 32, 32, 3), np.float32)
    assert run.model(x).shape == (1, len(record["classes"]))
