"""What every benchmark shares: the machine it ran on, medians, the JSON it writes, its tasks.

Benchmarks are run by hand (`python benchmarks/<name>.py`), never by the test suite. Each writes
benchmarks/results/<name>.json and merges its headline ratio into benchmarks/results/summary.json.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results"
SUMMARY = RESULTS / "summary.json"
REPO = Path(__file__).resolve().parent.parent


# Read when the benchmark starts, not when it writes: the code measured is the code at the start.
_AT_START = {"load_average_at_start": os.getloadavg(),
             "commit": subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                      capture_output=True, text=True, check=False).stdout.strip()}


def machine() -> dict:
    """The machine as a reader needs it to compare numbers: CPU, cores, load, library versions."""
    import keras
    import tensorflow as tf

    cpu = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        cpu.setdefault(key.strip(), value.strip())
    flags = set(cpu.get("flags", "").split())
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", "GPU")
            for g in tf.config.list_physical_devices("GPU")]
    return {
        "cpu": cpu.get("model name"), "cpu_family": cpu.get("cpu family"), "cpu_mhz": float(cpu.get("cpu MHz", 0)),
        "cores": os.cpu_count(), "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
        "gpus": gpus, "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "shared": "2 cores shared with other engineers' jobs",
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"), **_AT_START,
    }


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> dict:
    """Median, min, max and the relative spread (max-min)/median: how noisy the measurement was."""
    values = [float(v) for v in values]
    m = median(values)
    return {"median": m, "min": min(values), "max": max(values), "n": len(values),
            "rel_spread": (max(values) - min(values)) / m if m else None}


def write(name: str, payload: dict, summary: dict) -> Path:
    """benchmarks/results/<name>.json, and `summary`'s keys merged into summary.json."""
    from tfxfer.atomic import atomic_write_text

    payload = {"benchmark": name, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
               "load_average_at_end": os.getloadavg(), **payload}
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    merged = json.loads(SUMMARY.read_text()) if SUMMARY.is_file() else {}
    for key, value in summary.items():
        merged[key] = {**value, "benchmark": name, "measured": payload["finished"], "machine": payload["machine"]}
    atomic_write_text(SUMMARY, json.dumps(merged, indent=1) + "\n")
    return path


def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def config(**sections):
    """A validated tfxfer Config: the cifar8 net (width 1) at batch 128 unless told otherwise."""
    from tfxfer.config import Config

    data = {"dataset": {"name": "synthetic", "train_per_class": 500, "test_per_class": 50, "val_fraction": 0.1},
            "arch": {"name": "cifar8", "width": 1.0},
            "recipe": {"optimizer": "sgd", "lr": 0.01, "batch_size": 128, "epochs": 3, "dropout": 0.5,
                       "augment": {"crop": True, "pad": 4, "flip": True}}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return Config.from_dict(data)


def task(cfg, target: str = "B", source: str | None = None):
    from tfxfer.data.tasks import load_data, task_data

    return task_data(cfg, *load_data(cfg), task=target, source=source)


def forward_flops(spec, num_classes: int) -> dict[str, int]:
    """Forward FLOPs per image of each weight layer (2 per multiply-add of its conv or dense op;
    ReLU, pooling and LRN are left out: they are a few percent and not multiply-adds)."""
    from tfxfer.models import LAYER_NAMES, build_model

    model = build_model(spec, num_classes)
    out = {}
    for name in LAYER_NAMES:
        block = model.get_layer(name)
        if hasattr(block, "conv"):
            shape = block.input.shape
            if block.pad is not None:
                shape = block.pad.compute_output_shape(shape)
            _, h, w, c_out = block.conv.compute_output_shape(shape)
            k_h, k_w, c_in, _ = block.conv.kernel.shape
            out[name] = 2 * h * w * k_h * k_w * c_in * c_out
        else:
            d_in, d_out = block.dense.kernel.shape
            out[name] = 2 * d_in * d_out
    return out


def training_flops(spec, num_classes: int, frozen: int = 0) -> float:
    """FLOPs per training image with layers 1..frozen frozen and run live: forward through every
    layer, the weight gradient of each trained layer, the input gradient of each trained layer
    above the first trained one (nothing below it needs a gradient)."""
    fwd = list(forward_flops(spec, num_classes).values())
    total = sum(fwd) + sum(fwd[frozen:]) + sum(fwd[frozen + 1:])
    return float(total)


def named_config(name: str, overrides: dict | None = None):
    """A config of configs/ (e.g. cifar10: real CIFAR-10, two 5-class tasks) with dotted-key
    overrides, loaded from the repository root, which its relative data paths start from."""
    from tfxfer.config import load_config

    os.chdir(REPO)
    return load_config(name, overrides)


def train_timed(treatment: str, n: int, cfg, task, out: Path, base: Path | None = None) -> dict:
    """One run of tfxfer's trainer in a fresh directory under `out` (runs there share its prefix
    cache), timed: whole call, and per epoch from its history (the first epoch, which traces the
    step function and builds any prefix cache entry, apart from the steady ones after it)."""
    from tfxfer.runs.layout import WEIGHTS_FILE
    from tfxfer.runs.spec import RunSpec
    from tfxfer.training.loop import train

    spec = RunSpec(treatment, n, cfg)
    run_dir = Path(tempfile.mkdtemp(dir=out, prefix=f"{spec.run_id}."))
    t0 = time.perf_counter()
    record = train(spec, run_dir, task, base_weights=base / WEIGHTS_FILE if base else None,
                   base_run_id=base.name if base else None, verbose=False)
    wall = time.perf_counter() - t0
    history = json.loads((run_dir / "history.json").read_text())
    steady = history[1:] or history
    return {"treatment": treatment, "n": n, "precision": cfg.recipe.precision,
            "prefix_cache": cfg.training.prefix_cache and not (treatment.startswith("base") or treatment.endswith("+")),
            "run_dir": str(run_dir), "wall_s": wall, "epochs": len(history), "images_per_epoch": history[0]["images"],
            "first_epoch_wall_s": history[0]["wall_s"], "prefix_cache_s": history[0].get("prefix_cache_s", 0.0),
            "epoch_wall_s": median(h["wall_s"] for h in steady), "epoch_train_s": median(h["train_s"] for h in steady),
            "top1": record["top1"], "best_val_top1": record["best_val_top1"], "history": history}


def paired_accuracy(a: dict, b: dict) -> dict:
    """top-1 differences b - a over the runs both have: mean with a 95 % CI, mean |diff|."""
    import numpy as np
    from scipy import stats

    d = np.array([b[k]["top1"] - a[k]["top1"] for k in a if k in b])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {"runs": len(d), "mean_diff": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)],
            "mean_abs_diff": float(np.abs(d).mean()), "max_abs_diff": float(np.abs(d).max())}
