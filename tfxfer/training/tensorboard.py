"""What a run shows in TensorBoard: scalars per epoch, conv1 filters as an image, HParams."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


def filter_grid(kernel: np.ndarray) -> np.ndarray:
    """conv1 kernel [k, k, 3, F] → one [1, H, W, 3] image of the filters, each scaled to 0..1."""
    k, _, c, f = kernel.shape
    cols = int(np.ceil(np.sqrt(f)))
    rows = int(np.ceil(f / cols))
    grid = np.ones((rows * (k + 1) + 1, cols * (k + 1) + 1, 3), np.float32)
    for i in range(f):
        w = kernel[..., i]
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-12)
        r, col = divmod(i, cols)
        grid[1 + r * (k + 1):1 + r * (k + 1) + k, 1 + col * (k + 1):1 + col * (k + 1) + k] = w[..., :3] if c >= 3 else w
    return grid[None]


class RunLogger:
    """Writes a run's TensorBoard events under <run>/tb; a no-op on non-chief workers."""

    def __init__(self, logdir, hparams: dict | None, enabled: bool = True):
        self.writer = tf.summary.create_file_writer(str(logdir)) if enabled else None
        if self.writer is not None and hparams:
            with self.writer.as_default():
                hp.hparams(hparams, trial_id=str(hparams.get("run_id", "")))

    def epoch(self, epoch: int, scalars: dict[str, float], conv1_kernel: np.ndarray | None = None):
        if self.writer is None:
            return
        with self.writer.as_default(step=epoch):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            if conv1_kernel is not None:
                tf.summary.image("conv1/filters", filter_grid(conv1_kernel))
                # The raw kernel too, so filter evolution can be drawn later from any epoch.
                tf.summary.write("conv1/kernel", tf.constant(conv1_kernel, tf.float32))
        self.writer.flush()
