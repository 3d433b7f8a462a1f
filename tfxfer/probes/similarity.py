"""`tfxfer similarity`: how alike two networks' representations are, layer by layer (linear or RBF
CKA with the unbiased HSIC, minibatch form), on the same images.

Two run directories give one layer×layer matrix, each run over its own layers
(`FinishedRun.layer_names`: conv1..fc8, or a model file's cuts, head and logits); an experiment
directory gives, for every split, baseA vs baseB and every transferred network vs the base of its
target task (e.g. baseB vs AnB+ at each n, or at each cut of a model file's grid). Writes
similarity.csv, a heatmap per pair, the same-layer (diagonal) curves over the layers each pair
shares by name, and similarity.md under the output directory.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError
from tfxfer.probes.cka import KERNELS, MinibatchCKA
from tfxfer.probes.features import ModelSource, check_view, run_layers
from tfxfer.probes.probe import to_csv
from tfxfer.runs.layout import RESULT_FILE
from tfxfer.runs.records import read_result

CSV_FIELDS = ("run_x", "run_y", "layer_x", "layer_y", "cka", "kernel", "view", "images", "passes")
MIN_BATCH = 4  # the unbiased HSIC needs at least 4 examples


def layer_cka(source_x, source_y, images: np.ndarray, layers_x, layers_y, kernel: str = "linear",
              batch_size: int = 1024, passes: int = 1, seed: int = 0) -> np.ndarray:
    """[len(layers_x), len(layers_y)] minibatch CKA over `images` (uint8).

    Each pass splits a fresh seeded shuffle of the images into minibatches (so they mix classes) and
    adds their HSICs; a last minibatch of fewer than 4 images is left out. Averaged over random
    partitions, the minibatch HSICs are the full-batch ones, so more passes bring the estimate
    closer to full-batch CKA at the same memory (one pass: within about 1e-3 at 1024 per minibatch).
    `batch_size >= len(images)` is the full-batch estimate.
    """
    if batch_size < MIN_BATCH:
        raise UserError(f"batch_size {batch_size} too small; allowed: {MIN_BATCH} or more (the unbiased HSIC "
                        "needs 4 images per minibatch)")
    if not isinstance(passes, int) or passes < 1:
        raise UserError(f"passes {passes!r} invalid; allowed: a whole number >= 1")
    n = used_images(len(images), batch_size)
    if n < MIN_BATCH:
        raise UserError(f"{len(images)} images are too few for CKA; allowed: {MIN_BATCH} or more")
    acc = MinibatchCKA(kernel)
    for p in range(passes):
        order = np.random.default_rng([seed, p]).permutation(len(images))[:n]
        for fx, fy in zip(source_x.batches(images[order], layers_x, batch_size),
                          source_y.batches(images[order], layers_y, batch_size)):
            acc.update([fx[name] for name in layers_x], [fy[name] for name in layers_y])
    return acc.result()


def used_images(n: int, batch_size: int) -> int:
    """How many of n images a pass uses: all but a last minibatch too small for the unbiased HSIC."""
    return n - (n % batch_size if n % batch_size < MIN_BATCH else 0)


def similarity(paths, layers: list[str] | None = None, dataset: str | None = None, data_path: str | None = None,
               max_images: int = 5000, batch_size: int = 1024, passes: int = 1, kernel: str = "linear",
               view: str = "flatten", seed: int = 0, out=None, verbose: bool = True) -> dict[str, Path]:
    """CKA between two runs (two run directories) or within a grid (one experiment directory).

    `layers`: the layers of each run to compare (each one of every run's `layer_names`); None: all
    of each run's own."""
    from tfxfer.runs.finished import load_run

    if kernel not in KERNELS:
        raise UserError(f"kernel {kernel!r} unknown; allowed: {', '.join(KERNELS)}")
    check_view(view)
    if not isinstance(max_images, int) or max_images < MIN_BATCH:
        raise UserError(f"max_images {max_images!r} invalid; allowed: a whole number >= {MIN_BATCH}")
    paths = [Path(p) for p in paths]
    if len(paths) == 2:
        pairs = [tuple(paths)]
        out = Path(out) if out is not None else paths[0] / "similarity" / paths[1].resolve().name
    elif len(paths) == 1:
        pairs = grid_pairs(paths[0])
        out = Path(out) if out is not None else paths[0] / "similarity"
    else:
        raise UserError(f"similarity takes two run directories or one experiment directory; got {len(paths)} paths")

    t0 = time.perf_counter()
    runs = {p: load_run(p) for pair in pairs for p in pair}
    names = {p: run_layers(run, layers, classifier=True) for p, run in runs.items()}  # all checked before any CKA
    sources, rows, curves, written = {p: ModelSource(run, view) for p, run in runs.items()}, [], {}, {}
    for px, py in pairs:
        rx, ry = runs[px], runs[py]
        layers_x, layers_y = names[px], names[py]
        shared = [(n, i, layers_y.index(n)) for i, n in enumerate(layers_x) if n in layers_y]
        cfg = rx.config
        name = dataset or cfg.dataset.name
        images, described = rx.test_images(name, data_path or (cfg.dataset.path if name == cfg.dataset.name
                                                               else None), max_images, seed)
        t = time.perf_counter()
        matrix = layer_cka(sources[px], sources[py], images, layers_x, layers_y, kernel, batch_size, passes, seed)
        idx, idy = rx.record["run_id"], ry.record["run_id"]
        if verbose:
            diag = "  ".join(f"{n} {matrix[i, j]:.3f}" for n, i, j in shared) or "no layer in common"
            print(f"CKA {idx} vs {idy} on {described} ({time.perf_counter() - t:.1f} s): {diag}")
        for i, lx in enumerate(layers_x):
            for j, ly in enumerate(layers_y):
                rows.append({"run_x": idx, "run_y": idy, "layer_x": lx, "layer_y": ly,
                             "cka": round(float(matrix[i, j]), 6), "kernel": kernel, "view": view,
                             "images": used_images(len(images), batch_size), "passes": passes})
        curves[f"{idx} vs {idy}"] = {n: float(matrix[i, j]) for n, i, j in shared}
        from tfxfer.probes.figures import cka_heatmap

        written[f"heatmap {idx} {idy}"] = cka_heatmap(matrix, layers_x, layers_y, idx, idy,
                                                      f"{kernel} CKA on {described}", out / f"cka_{idx}__{idy}.png")

    from tfxfer.probes.figures import cka_diagonal

    axis = merged_axis(names.values())
    written["diagonal"] = cka_diagonal(curves, f"same-layer {kernel} CKA", out / "cka_diagonal.png", axis)
    written["csv"] = out / "similarity.csv"
    atomic_write_text(written["csv"], to_csv(rows, CSV_FIELDS))
    written["md"] = out / "similarity.md"
    atomic_write_text(written["md"], markdown(curves, [n for n in axis if any(n in c for c in curves.values())],
                                              kernel, time.perf_counter() - t0))
    return written


def merged_axis(layer_lists) -> list[str]:
    """The layers of several runs on one axis, each run's in its network order: the longest list's
    first (conv1..fc8; in a model file's grid, baseB's, which reaches every cut), then any others."""
    axis: list[str] = []
    for names in sorted(layer_lists, key=len, reverse=True):
        axis += [n for n in names if n not in axis]
    return axis


def markdown(curves: dict[str, dict[str, float]], layers, kernel: str, wall_s: float) -> str:
    lines = [f"# Layer similarity ({kernel} CKA, unbiased HSIC, minibatch)", "",
             f"Same-layer CKA of each pair of networks on the same images, over the layers they share "
             f"by name ({wall_s:.0f} s).", "",
             "| pair | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
    for label, curve in curves.items():
        lines.append(f"| {label} | " + " | ".join(f"{curve[n]:.3f}" if n in curve else "–" for n in layers) + " |")
    return "\n".join(lines) + "\n"


def grid_pairs(results_dir: Path) -> list[tuple[Path, Path]]:
    """In an experiment directory: (baseA, baseB) of every split, and (base of the target task, run)
    for every transferred run, as far as both are finished (a model file's grid: its baseB with each
    AnB, AnB+ and random run)."""
    from tfxfer.runs.spec import RunSpec
    from tfxfer.treatments import get_treatment

    if not results_dir.is_dir():
        raise UserError(f"experiment directory {results_dir} does not exist")
    if read_result(results_dir) is not None:
        raise UserError(f"{results_dir} is a single run; give two run directories, or an experiment directory")
    pairs = []
    for result in sorted(results_dir.glob(f"*/{RESULT_FILE}")):
        record = read_result(result.parent)
        treatment = get_treatment(record["treatment"])
        if treatment.name == "baseB":
            continue
        config = RunSpec.of_record(record).config
        other = "baseB" if treatment.name == "baseA" else f"base{treatment.target}"
        base_dir = results_dir / RunSpec(other, 0, config).run_id
        if read_result(base_dir) is not None:
            pairs.append((result.parent, base_dir) if treatment.name == "baseA" else (base_dir, result.parent))
    if not pairs:
        raise UserError(f"{results_dir} holds no pair of finished runs to compare (baseA with baseB, or a "
                        "transferred run with the base of its target task)")
    return pairs
