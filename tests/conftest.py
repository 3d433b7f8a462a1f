import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests must never reach for real data or a cache outside their temporary directories.
os.environ.pop("TFXFER_CIFAR10", None)
os.environ.pop("TFXFER_CIFAR100", None)

import pytest  # noqa: E402

from tfxfer.config import Config  # noqa: E402

# A tiny synthetic setup: seconds per run on 2 CPU cores.
TINY = {
    "dataset": {"name": "synthetic", "train_per_class": 60, "test_per_class": 20, "val_fraction": 0.2},
    "arch": {"name": "cifar8", "width": 0.25},
    "recipe": {"optimizer": "adam", "lr": 0.002, "dropout": 0.0, "epochs": 2, "batch_size": 16,
               "augment": {"pad": 2, "flip": False}},
}


def tiny_config(tmp_path, **sections) -> Config:
    data = {k: dict(v) for k, v in TINY.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    data["out"] = str(tmp_path / "runs")
    return Config.from_dict(data)


def trained_bases(tmp_path_factory, name: str, tasks: str, epochs: int) -> dict:
    """{task: run dir} of base nets base<task> trained on the tiny setup into one output directory
    (an experiment dir), for module-scoped fixtures: their cache stays in that directory too."""
    from tfxfer.experiments.runner import run
    from tfxfer.runs.spec import RunSpec

    tmp = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFXFER_CACHE", str(tmp / "cache"))
        config = tiny_config(tmp, recipe={"epochs": epochs})
        return {t: tmp / "runs" / run(RunSpec(f"base{t}", None, config), verbose=False)["run_id"] for t in tasks}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TFXFER_CACHE", str(tmp_path / "cache"))
