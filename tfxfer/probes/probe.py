"""`tfxfer probe`: Zeiler & Fergus's feature-generalization protocol (§5.2-5.3) on a finished run.

For each layer, a linear classifier (softmax and/or SVM) is trained on the frozen features of k
images per class of a target dataset and tested on held-out images of the same classes, over
seeded folds; optionally the same architecture is trained from scratch on the same k images.
Writes probe.csv (one row per classifier, layer, k and fold), probe.md (Table 7's shape: rows
classifier (layer), columns k), accuracy against k and against layer as PNGs, and TensorBoard
scalars under <out>/tb. A run whose base is a model file (tfxfer.models.external) is probed over its
own layers (`FinishedRun.layer_names`): the base model's cuts it copied and its head's hidden layers.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError, names_list
from tfxfer.probes.features import check_view, feature_source, layer_axis, run_layers
from tfxfer.probes.linear import parse_classifiers, probe_accuracy
from tfxfer.probes.targets import draw_fold, fold_seed, resolve_target

SCRATCH = "scratch"  # the classifier name of the from-scratch rows; their layer is "all"
CSV_FIELDS = ("run_id", "target", "view", "classifier", "layer", "layer_index", "k", "fold", "seed", "accuracy",
              "C", "dim", "n_train", "n_test", "fit_s")


def parse_counts(values: list[int], name: str) -> list[int]:
    """Whole numbers >= 1 (e.g. k images per class), sorted, each once."""
    values = names_list(values, name)
    if not values or any(not isinstance(v, int) or v < 1 for v in values):
        raise UserError(f"{name} {values!r} invalid; allowed: one or more whole numbers >= 1")
    return sorted(set(values))


def _positive(value, name: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise UserError(f"{name} {value!r} invalid; allowed: a whole number >= 1")
    return value


def probe(run_dir, dataset: str | None = None, layers: list[str] | None = None,
          classifiers: list[str] | None = None, per_class: list[int] = (5, 10, 30), folds: int = 5,
          scratch: bool = False, view: str = "flatten", test_per_class: int = 50, seed: int = 0,
          batch_size: int = 256, scratch_steps: int = 300, out=None, data_path: str | None = None,
          data_dir: str | None = None, server: str | None = None, model: str | None = None,
          version: int | None = None, export: str | None = None, verbose: bool = True) -> dict[str, Path]:
    """Run the protocol and write its outputs (see the module docstring); returns {name: path}.

    Features come from the run's network in this process (cached), or from an export of it:
    `server` (http:// or grpc://, with `model` and `version`) or `export` (a SavedModel directory).
    """
    from tfxfer.runs.finished import load_run

    classifiers = parse_classifiers(classifiers)
    ks = parse_counts(per_class, "per_class")
    for value, name in ((folds, "folds"), (test_per_class, "test_per_class"), (batch_size, "batch_size"),
                        (scratch_steps, "scratch_steps")):
        _positive(value, name)
    check_view(view)
    run = load_run(run_dir)
    layers = run_layers(run, layers)
    if scratch and run.from_file:
        raise UserError(f"probe --scratch trains tfxfer's own architecture from scratch; {run.run_id}'s base is a "
                        "model file, which has none; allowed: probe without --scratch")
    target = resolve_target(run, dataset, data_path, data_dir)
    draws = [draw_fold(target, k, fold_seed(seed, f), f, test_per_class) for k in ks for f in range(folds)]
    out = Path(out) if out is not None else run.run_dir / "probes" / f"{target.slug}-{view}"
    source = feature_source(run, view, server, model, version, export)

    t0 = time.perf_counter()
    # Only the images some fold uses are extracted (every k's draws are prefixes of the largest k's).
    parts = {"train": np.unique(np.concatenate([d.train for d in draws])),
             "test": np.unique(np.concatenate([d.test for d in draws]))}
    if target.pooled:  # one pool of images: extracted once, for both roles
        parts["train"] = parts["test"] = np.union1d(parts["train"], parts["test"])
        feats = dict.fromkeys(parts, source.features(target.train_x[parts["train"]], layers, batch_size))
    else:
        feats = {part: source.features(target.images(part)[0][idx], layers, batch_size)
                 for part, idx in parts.items()}
    extract_s = time.perf_counter() - t0
    if verbose:
        print(f"features of {len(parts['train']) + (0 if target.pooled else len(parts['test']))} images, "
              f"layers {','.join(layers)} ({view}): {extract_s:.1f} s")

    rows = []
    _, train_y = target.images("train")
    _, test_y = target.images("test")
    for d in draws:
        y, ty = train_y[d.train], test_y[d.test]
        rows_before = len(rows)
        for layer in layers:
            x = feats["train"][layer][np.searchsorted(parts["train"], d.train)]
            tx = feats["test"][layer][np.searchsorted(parts["test"], d.test)]
            for clf in classifiers:
                t = time.perf_counter()
                acc, C = probe_accuracy(clf, x, y, tx, ty, len(target.class_names), d.seed)
                rows.append(_row(run, target, view, clf, layer, d, acc, C, x.shape[1], time.perf_counter() - t))
        if scratch:
            from tfxfer.probes.scratch import scratch_accuracy

            t = time.perf_counter()
            acc = scratch_accuracy(run, target, d, scratch_steps, out / "scratch")
            rows.append(_row(run, target, view, SCRATCH, "all", d, acc, None, None, time.perf_counter() - t))
        if verbose:
            best = max(rows[rows_before:], key=lambda r: r["accuracy"])
            print(f"k={d.k} fold {d.index + 1}/{folds} (seed {d.seed}): best {best['classifier']}({best['layer']}) "
                  f"{best['accuracy']:.3f}")

    from tfxfer.probes.figures import accuracy_vs_k, accuracy_vs_layer

    summary = summarize(rows)
    info = {"run_id": run.record["run_id"], "target": target.name, "classes": len(target.class_names),
            "folds": folds, "test_per_class": test_per_class, "layers": list(run.layer_names), "pooled": target.pooled, "view": view,
            "extract_s": extract_s, "wall_s": time.perf_counter() - t0}
    written = {"csv": out / "probe.csv", "table": out / "probe.md"}
    atomic_write_text(written["csv"], to_csv(rows))
    atomic_write_text(written["table"], table(summary, ks, info))
    written["vs_k"] = accuracy_vs_k(summary, ks, info, out / "probe_vs_k.png")
    written["vs_layer"] = accuracy_vs_layer(summary, ks, info, out / "probe_vs_layer.png")
    written["tensorboard"] = log_scalars(summary, out / "tb", layer_axis(info))
    return written


def _row(run, target, view, clf, layer, d, acc, C, dim, fit_s) -> dict:
    return {"run_id": run.record["run_id"], "target": target.name, "view": view, "classifier": clf,
            "layer": layer, "layer_index": run.layer_index(layer) if layer in run.layer_names else "",
            "k": d.k, "fold": d.index, "seed": d.seed, "accuracy": round(acc, 6), "C": C,
            "dim": dim, "n_train": len(d.train), "n_test": len(d.test), "fit_s": round(fit_s, 3)}


def to_csv(rows: list[dict], fields=CSV_FIELDS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def summarize(rows: list[dict]) -> dict[tuple[str, str], dict[int, tuple[float, float, int]]]:
    """{(classifier, layer): {k: (mean, std across folds, folds)}}, in row order."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["classifier"], r["layer"]), {}).setdefault(r["k"], []).append(r["accuracy"])
    return {key: {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
                  for k, v in by_k.items()} for key, by_k in groups.items()}


def row_label(classifier: str, layer: str, axis: tuple[str, ...]) -> str:
    if classifier == SCRATCH:
        return "scratch (all layers, random init)"
    return f"{classifier} ({axis.index(layer) + 1}) {layer}"


def table(summary, ks: list[int], info: dict) -> str:
    """Table 7's shape: one row per classifier (layer), one column per k; mean ± std in %."""
    test = "the images not drawn" if info["pooled"] else "the target's test images"
    lines = [f"# Linear probes of {info['run_id']} on {info['target']}", "",
             (f"{info['classes']} classes; k training images per class drawn at random, tested on up to "
             f"{info['test_per_class']} per class of {test}; {info['folds']} folds. Mean of per-class "
             f"accuracies (%) ± standard deviation across folds; chance {100 / info['classes']:.1f} %. "
             f"Conv features: {info['view']}. Wall time {info['wall_s']:.0f} s "
             f"(feature extraction {info['extract_s']:.0f} s)."), "",
             "| classifier (layer) | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "|---|" + "---|" * len(ks)]
    for (clf, layer), by_k in summary.items():
        cells = []
        for k in ks:
            mean, std, _ = by_k[k]
            cells.append(f"{100 * mean:.1f}" + ("" if np.isnan(std) else f" ± {100 * std:.1f}"))
        lines.append(f"| {row_label(clf, layer, layer_axis(info))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def log_scalars(summary, logdir: Path, axis: tuple[str, ...]) -> Path:
    """probe/<classifier>/<layer> against k (Fig. 9's view) and probe_by_layer/<classifier>/k<k> against layer."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for (clf, layer), by_k in summary.items():
            for k, (mean, _, _) in sorted(by_k.items()):
                tf.summary.scalar(f"probe/{clf}/{layer}", mean, step=k)
                if layer in axis:
                    tf.summary.scalar(f"probe_by_layer/{clf}/k{k}", mean, step=axis.index(layer) + 1)
    writer.close()
    return logdir
