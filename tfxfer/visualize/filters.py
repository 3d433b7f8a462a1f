"""First-layer filters as an image grid, and their evolution over training (Zeiler & Fergus Fig. 4, 6).

The evolution is drawn from the raw conv1 kernel the training loop logs to TensorBoard after every
epoch (tensor summary `conv1/kernel` in <run>/tb), so it needs no checkpoint per epoch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfxfer.errors import UserError
from tfxfer.runs.finished import load_run
from tfxfer.runs.layout import TB_DIR
from tfxfer.training.tensorboard import filter_grid
from tfxfer.visualize.figures import new_figure, publish, save_figure
from tfxfer.visualize.inputs import output_dir

KERNEL_TAG = "conv1/kernel"
COLUMNS = 7  # epochs per row of the evolution figure


def logged_kernels(run_dir: str | Path) -> dict[int, np.ndarray]:
    """{epoch: conv1 kernel [k, k, 3, F]} from the run's TensorBoard events, in epoch order."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import (
        TENSORS,
        EventAccumulator,
    )

    tb = Path(run_dir) / TB_DIR
    events = EventAccumulator(str(tb), size_guidance={TENSORS: 0})  # 0: keep every epoch
    events.Reload()
    if KERNEL_TAG not in events.Tags()["tensors"]:
        raise UserError(f"run {run_dir} logged no {KERNEL_TAG!r} tensors in {tb} (it was trained before "
                        "tfxfer logged them); draw its final filters without --epochs")
    # A resumed run may log an epoch twice; the later event wins.
    return dict(sorted({e.step: tf.make_ndarray(e.tensor_proto) for e in events.Tensors(KERNEL_TAG)}.items()))


def filters_figure(kernels: dict[int, np.ndarray], title: str, path: str | Path) -> Path:
    """One filter grid per entry of `kernels` ({epoch: kernel}), side by side, COLUMNS per row."""
    cols = min(COLUMNS, len(kernels))
    rows = -(-len(kernels) // cols)
    fig = new_figure(max(4.0, 2.2 * cols + 0.4), 2.4 * rows + 0.5)
    fig.suptitle(title)
    for i, (epoch, kernel) in enumerate(kernels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(filter_grid(kernel)[0], interpolation="nearest")
        ax.set_title(f"epoch {epoch}" if epoch is not None else f"{kernel.shape[-1]} filters, "
                     f"{kernel.shape[0]}x{kernel.shape[1]}", fontsize=9)
        ax.set_axis_off()
    return save_figure(fig, path)


def draw_filters(run_dir: str | Path, epochs: bool = False, out: str | Path | None = None,
                 tensorboard: bool = False) -> dict[str, Path]:
    """conv1's filters of a finished run (final weights), or at each logged epoch with `epochs`."""
    run = load_run(run_dir, float32=True)
    run.require_registry("visualize filters")
    run_id = run.record["run_id"]
    if epochs:
        kernels = logged_kernels(run.run_dir)
        title, name = f"{run_id}: conv1 filters over training", "filters_epochs"
    else:
        kernels = {None: run.model.get_layer("conv1").get_weights()[0]}
        title, name = f"{run_id}: conv1 filters", "filters"
    written = {name: filters_figure(kernels, title, output_dir(run, out) / f"{name}.png")}
    return publish(run, written, tensorboard)
