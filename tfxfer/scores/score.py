"""`tfxfer score`: transferability scores of every layer of a finished run for a target task.

For each layer, the metrics of :mod:`tfxfer.scores.metrics` on that layer's features of a seeded
subset of the target's training images and their labels; LEEP and NCE on the network's own fc8
softmax on the same images (one value per network, not per layer: they read the source classifier,
whatever layer one would copy). A run whose base is a model file (tfxfer.models.external) is scored
over its own layers (`FinishedRun.layer_names`): the base model's cuts it copied, its head's hidden
layers, and LEEP/NCE on its `logits`; its features are computed, not cached. Features come as the probes get them: the run's network in float32
through the frozen-prefix activation cache, in the evaluation's centre crop, conv maps reduced by
the view. Writes score.csv (one row per metric and layer), score.md, score_vs_layer.png (with the
probe's accuracy against layer beside it when a probe of the same run and target exists) and
TensorBoard scalars under <out>/tb.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from tfxfer import progress
from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError, names_list
from tfxfer.scores.metrics import FEATURES, METRICS, SOURCE_PROBS, feature_scores, get_metric

# 2000 images of a 5-class task: 400 per class, several times the 32-256 dimensions of the pooled
# conv and fc features, so the per-class fits are over-determined; and all 7 layers score within
# the 60 s target on a 2-core CPU (benchmarks/transferability_scores.py).
DEFAULT_MAX_IMAGES = 2000
# Pooled conv maps by default: flattened maps of cifar8's conv1-4 have 4096-8192 dimensions, more
# than the images, where the plain H-score saturates at C - 1 whatever the features and LogME and
# TransRate mostly measure the dimension.
DEFAULT_VIEW = "avg"
# LEEP and NCE read the source network's softmax: its last layer (fc8; a model-file run's logits).
CSV_FIELDS = ("run_id", "target", "view", "metric", "layer", "layer_index", "score", "dim", "images", "classes",
              "seed", "seconds")
SCORE_FILE = "score.csv"
INFO_FILE = "score.json"  # what was scored and the wall time, for the report


def parse_metrics(metrics: list[str] | None) -> list[str]:
    """['logme', 'leep'] → registered metric names, in registry order; None → all of them."""
    if metrics is None:
        return list(METRICS)
    names = names_list(metrics, "metrics")
    if not names:
        raise UserError(f"metrics [] invalid; allowed: one or more of {', '.join(METRICS)}")
    chosen = {get_metric(n).name for n in names}
    return [n for n in METRICS if n in chosen]


def _subset(y: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """Sorted indices of at most max_images images, a seeded random subset (class proportions kept
    on average; sorted so that the activation cache sees one image order)."""
    if max_images >= len(y):
        return np.arange(len(y))
    return np.sort(np.random.default_rng(seed).choice(len(y), max_images, replace=False))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def score(run_dir, dataset: str | None = None, layers: list[str] | None = None, metrics: list[str] | None = None, max_images: int = DEFAULT_MAX_IMAGES,
          view: str = DEFAULT_VIEW, seed: int = 0, batch_size: int = 256, out=None, data_path: str | None = None,
          data_dir: str | None = None, verbose: bool = True) -> dict[str, Path]:
    """Score every layer (see the module docstring) and write the outputs; returns {name: path}.

    Every input is checked before features are computed or anything is written."""
    from tfxfer.probes.features import ModelSource, check_view, run_layers
    from tfxfer.probes.targets import resolve_target
    from tfxfer.runs.finished import load_run

    started = time.perf_counter()
    names = parse_metrics(metrics)
    check_view(view)
    for value, name, least in ((max_images, "max_images", 2), (batch_size, "batch_size", 1)):
        if not isinstance(value, int) or value < least:
            raise UserError(f"{name} {value!r} invalid; allowed: a whole number >= {least}")
    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    run = load_run(run_dir)
    layers = run_layers(run, layers)
    classifier = run.layer_names[-1]
    have = {layer.name for layer in run.model.layers} | set(run.cuts)
    lacking = [n for n in layers if n not in have]
    if lacking:  # an arch variant can lack a layer of the registered arch
        raise UserError(f"layers {','.join(lacking)!r} are not in {run.run_id}'s network; allowed: "
                        f"{', '.join(n for n in run.layer_names[:-1] if n in have)}")
    target = resolve_target(run, dataset, data_path, data_dir)
    idx = _subset(target.train_y, max_images, seed)
    x, y = target.train_x[idx], target.train_y[idx]
    if len(np.unique(y)) < 2:
        raise UserError(f"target {target.name} has {len(np.unique(y))} class among its {len(y)} images: a target "
                        "with one class cannot be scored; allowed: a target with at least 2 classes")
    out = Path(out) if out is not None else run.run_dir / "scores" / f"{target.slug}-{view}"

    t0 = time.perf_counter()
    needs_probs = any(METRICS[n].needs == SOURCE_PROBS for n in names)
    wanted = layers + ([classifier] if needs_probs and classifier not in layers else [])
    source = ModelSource(run, view)
    feats = {}
    # Layer by layer for the bar: each is built from the cached layer below it, so nothing is redone.
    for layer in progress.track(wanted, len(wanted), f"{run.run_id} features of {len(x)} images", enabled=verbose):
        feats.update(source.features(x, [layer], batch_size))
    extract_s = time.perf_counter() - t0
    if verbose:
        print(f"features of {len(x)} images of {target.name}, layers {','.join(wanted)} ({view}): {extract_s:.1f} s")

    # One BLAS thread: the matrices are small (images x at most a few hundred dimensions), and on a
    # loaded CPU OpenBLAS's threads spin-wait on each other: LogME of 2000 x 256 features took 2.9 s
    # with its default threads against 0.4 s with one, on this project's 2-core machine under load.
    with threadpool_limits(1, user_api="blas"):
        found = {layer: feature_scores(feats[layer], y, [n for n in names if METRICS[n].needs == FEATURES])
                 for layer in layers}
        found[classifier] = {n: _timed(METRICS[n], softmax(feats[classifier]), y)
                                   for n in names if METRICS[n].needs == SOURCE_PROBS}
    rows = []
    for name in names:  # metric by metric, layer by layer: the table's and the csv's order
        for layer in (layers if METRICS[name].needs == FEATURES else [classifier]):
            value, seconds = found[layer][name]
            rows.append({"run_id": run.run_id, "target": target.name, "view": view, "metric": name, "layer": layer,
                         "layer_index": run.layer_index(layer), "score": value,
                         "dim": feats[layer].shape[1], "images": len(y), "classes": len(np.unique(y)),
                         "seed": seed, "seconds": round(seconds, 4)})
            if verbose:
                print(f"{name} {layer}: {value:.6g}")
    info = {"run_id": run.run_id, "target": target.name, "view": view, "images": len(y), "seed": seed,
            "classes": len(np.unique(y)), "layers": list(run.layer_names), "extract_s": extract_s, "wall_s": time.perf_counter() - t0,
            # with opening the run and loading the target's images, which wall_s leaves out
            "total_s": time.perf_counter() - started}

    from tfxfer.scores.figures import score_vs_layer

    written = {"csv": out / SCORE_FILE, "table": out / "score.md", "info": out / INFO_FILE}
    atomic_write_text(written["csv"], to_csv(rows))
    atomic_write_text(written["info"], json.dumps(info, indent=1) + "\n")
    atomic_write_text(written["table"], table(rows, info))
    written["figure"] = score_vs_layer(rows, info, _probe_curve(run, target.slug), out / "score_vs_layer.png")
    written["tensorboard"] = log_scalars(rows, out / "tb")
    return written



def _timed(metric, x, y) -> tuple[float, float]:
    t = time.perf_counter()
    return float(metric(x, y)), time.perf_counter() - t

def to_csv(rows: list[dict]) -> str:
    from tfxfer.probes.probe import to_csv as probe_csv

    return probe_csv(rows, CSV_FIELDS)


def read_scores(path: str | Path) -> list[dict]:
    """score.csv rows with numbers as numbers."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["score"], r["seconds"] = float(r["score"]), float(r["seconds"])
        r["layer_index"], r["dim"], r["images"] = int(r["layer_index"]), int(r["dim"]), int(r["images"])
    return rows


def table(rows: list[dict], info: dict) -> str:
    from tfxfer.probes.features import layer_axis

    """One row per metric, one column per layer; LEEP/NCE in the classifier's column (fc8, logits)."""
    axis = layer_axis(info)
    layers = sorted({r["layer"] for r in rows}, key=axis.index)
    by = {(r["metric"], r["layer"]): r["score"] for r in rows}
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    lines = [f"# Transferability scores of {info['run_id']} on {info['target']}", "",
             (f"{info['images']} training images of the target ({info['classes']} classes; a random subset, seed "
              f"{info['seed']}); conv features: {info['view']}. Higher is more transferable. LEEP and NCE read the "
              f"network's own {axis[-1]} softmax, one value for the network. Wall time {info['wall_s']:.1f} s (features "
              f"{info['extract_s']:.1f} s)."), "",
             "| metric | " + " | ".join(f"{axis.index(n) + 1} {n}" for n in layers) + " |",
             "|---|" + "---|" * len(layers)]
    for m in metrics:
        lines.append(f"| {m} ({METRICS[m].reference}) | " +
                     " | ".join("" if (m, n) not in by else f"{by[m, n]:.4g}" for n in layers) + " |")
    return "\n".join(lines) + "\n"


def log_scalars(rows: list[dict], logdir: Path) -> Path:
    """score/<metric> against the layer index (1..7; LEEP and NCE at 8, fc8; a model file's: its own)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for r in rows:
            tf.summary.scalar(f"score/{r['metric']}", r["score"], step=r["layer_index"])
    writer.close()
    return logdir


def _probe_curve(run, slug: str) -> tuple[str, dict[str, float]] | None:
    """The probe of the same run and target, if one was written: (label, {layer: mean accuracy}) of
    its first classifier at its largest k, averaged over folds."""
    found = sorted((run.run_dir / "probes").glob(f"{slug}-*/probe.csv"))
    if not found:
        return None
    with open(found[0]) as f:
        rows = [r for r in csv.DictReader(f) if r["layer"] in run.layer_names]
    if not rows:
        return None
    clf, k = rows[0]["classifier"], max(int(r["k"]) for r in rows)
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r["classifier"] == clf and int(r["k"]) == k:
            acc.setdefault(r["layer"], []).append(float(r["accuracy"]))
    return f"probe {clf}, k = {k} ({found[0].parent.name})", {n: float(np.mean(v)) for n, v in acc.items()}
