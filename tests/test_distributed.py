"""The same training loop under MirroredStrategy and MultiWorkerMirroredStrategy, on CPU."""
import json

from helpers import free_ports, only_result, run_tfxfer, tf_config, tfxfer, write_config

TWO_CPUS = ("import tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)")


def assert_learned(run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"], history


def test_mirrored_over_two_logical_cpus(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "runs",
                       training={"strategy": "mirrored", "devices": ["/cpu:0", "/cpu:1"]},
                       recipe={"epochs": 3})
    res = run_tfxfer("train", "--config", cfg, "--treatment", "baseB", "--quiet", prelude=TWO_CPUS)
    assert res.returncode == 0, res.stderr
    record = only_result(tmp_path / "runs")
    assert record["device"] == "2x cpu"
    assert record["epochs"] == 3
    assert_learned(tmp_path / "runs" / record["run_id"])


def test_multiworker_over_two_local_processes(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "runs", recipe={"epochs": 2})
    ports = free_ports(2)
    procs = [tfxfer("train", "--config", cfg, "--treatment", "baseB", "--strategy", "multiworker", "--quiet",
                    env={"TF_CONFIG": tf_config(ports, i)}) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    record = only_result(tmp_path / "runs")
    assert record["device"] == "2x cpu (2 workers)"
    assert record["epochs"] == 2
    assert_learned(tmp_path / "runs" / record["run_id"])
    # Only the chief writes into the run directory.
    run_dir = tmp_path / "runs" / record["run_id"]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints", "config.yaml", "history.json", "model.weights.h5", "normalization.json", "result.json", "tb"]
