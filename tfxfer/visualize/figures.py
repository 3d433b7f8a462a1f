"""Shared figure plumbing: image tiling, atomic PNG writes, and the same PNGs in TensorBoard.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so they render with
the Agg canvas whatever the user's interactive backend is, and nothing global is changed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tfxfer.runs.layout import TB_DIR


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def tile(images, cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Equal-sized [h, w, 3] images → one grid image, `cols` per row, `pad` pixels of `fill` between."""
    images = list(images)
    h, w, c = images[0].shape
    rows = -(-len(images) // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, np.float32)
    for i, im in enumerate(images):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = im
    return grid


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG atomically (temporary file + rename): no half-written figure is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the figure.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def log_to_tensorboard(run_dir: str | Path, pngs: dict[str, Path], step: int) -> None:
    """Log the written PNGs as TensorBoard images under <run>/tb, tagged `visualize/<name>`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(Path(run_dir) / TB_DIR))
    with writer.as_default(step=step):
        for name, png in pngs.items():
            image = tf.io.decode_png(tf.io.read_file(str(png)), channels=3)
            tf.summary.image(f"visualize/{name}", image[None])
    writer.close()


def publish(run, written: dict[str, Path], tensorboard: bool) -> dict[str, Path]:
    """The figures a command wrote, also logged to the run's TensorBoard (at its last epoch) if asked."""
    if tensorboard:
        log_to_tensorboard(run.run_dir, written, step=int(run.record["epochs"]))
    return written
