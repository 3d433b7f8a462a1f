"""Feature invariance (Zeiler & Fergus §4, Fig. 5): translate, scale and rotate each image over a
range and measure how far the conv1 and fc7 features move from the untransformed image's, and the
probability of the true class. A run whose base is a model file has no conv1 and fc7: its first and
last feature layers (`FinishedRun.layer_names`: its first cut, and its last hidden layer or cut) stand
for them.

Transforms act on the network input about the image centre (bilinear, new pixels 0: the dataset's
mean colour); translation is vertical, as in the paper. Every transformed copy is made inside a
tf.data pipeline and goes through the network in batches of `batch_size`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfxfer.errors import UserError
from tfxfer.runs.finished import FinishedRun, load_run
from tfxfer.visualize.figures import new_figure, publish, save_figure, tile
from tfxfer.visualize.inputs import check_positive, display_images, open_images, output_dir

TRANSFORMS = ("translate", "scale", "rotate")
FEATURE_LAYERS = ("conv1", "fc7")


def feature_layers(run: FinishedRun) -> tuple[str, str]:
    """The two layers followed: conv1 and fc7, or a model-file run's first and last before its logits."""
    return (run.layer_names[0], run.layer_names[-2]) if run.from_file else FEATURE_LAYERS


UNITS = {"translate": "vertical shift (pixels)", "scale": "scale factor", "rotate": "rotation (degrees)"}


@dataclasses.dataclass(frozen=True)
class Ranges:
    """How far each transform goes: shift as a fraction of the image side, scale, angle in degrees."""

    shift: float = 0.25
    scale: tuple[float, float] = (0.6, 1.8)
    angle: float = 360.0
    steps: int = 17

    def amounts(self, image_size: int) -> dict[str, np.ndarray]:
        """Each transform's values, always including the identity (0 shift, scale 1 if in range, 0°)."""
        if not 0 < self.shift <= 1:
            raise UserError(f"shift {self.shift!r} is invalid; allowed: a fraction of the image side in (0, 1]")
        if not 0 < self.scale[0] < self.scale[1]:
            raise UserError(f"scale range {self.scale!r} is invalid; allowed: 0 < smallest < largest")
        if not 0 < self.angle <= 360:
            raise UserError(f"angle {self.angle!r} is invalid; allowed: degrees in (0, 360]")
        if self.steps < 2:
            raise UserError(f"steps {self.steps!r} is invalid; allowed: a whole number of at least 2")
        scales = np.linspace(*self.scale, self.steps)
        return {
            "translate": np.union1d(np.linspace(-self.shift, self.shift, self.steps) * image_size, [0.0]),
            "scale": np.union1d(scales, [1.0]) if self.scale[0] <= 1 <= self.scale[1] else scales,
            "rotate": np.linspace(0.0, self.angle, self.steps),
        }


def transform_vector(kind: str, amount: float, image_size: int) -> np.ndarray:
    """keras.ops.image.affine_transform's 8 numbers: where each output pixel (x, y) is read from."""
    c = (image_size - 1) / 2
    if kind == "translate":  # down by `amount` pixels
        return np.array([1, 0, 0, 0, 1, -amount, 0, 0], np.float32)
    if kind == "scale":  # magnified `amount` times about the centre
        z = 1.0 / amount
        return np.array([z, 0, c * (1 - z), 0, z, c * (1 - z), 0, 0], np.float32)
    if kind == "rotate":  # `amount` degrees about the centre
        t = np.deg2rad(amount)
        cos, sin = np.cos(t), np.sin(t)
        return np.array([cos, sin, c - cos * c - sin * c, -sin, cos, c + sin * c - cos * c, 0, 0], np.float32)
    raise ValueError(f"unknown transform {kind!r}")


def transformed_copies(xs: np.ndarray, which: np.ndarray, transforms: np.ndarray) -> tf.data.Dataset:
    """Network inputs xs[which[i]] under affine transform transforms[i], for every i."""
    images = tf.constant(xs, tf.float32)

    def apply(i, t):
        return keras.ops.image.affine_transform(tf.gather(images, i), t, interpolation="bilinear",
                                                fill_mode="constant", fill_value=0.0)

    return tf.data.Dataset.from_tensor_slices((which, transforms)).map(
        apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def invariance_curves(run: FinishedRun, xs: np.ndarray, labels: list[int | None], ranges: Ranges,
                      batch_size: int) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Per transform: {"conv1": [N, T] distances, "fc7": [N, T], "probability": [N, T]} and the
    amounts. An image without a true label is followed on its top class in the untransformed image."""
    check_positive(batch_size=batch_size)
    amounts = ranges.amounts(xs.shape[1])
    followed = feature_layers(run)
    layers = [*followed, "logits"]
    *base_features, base_logits = run.predict(layers, xs, batch_size)
    labels = np.array([np.argmax(base_logits[i]) if label is None else label for i, label in enumerate(labels)])
    kinds = [(kind, a) for kind in TRANSFORMS for a in amounts[kind]]
    which = np.repeat(np.arange(len(xs)), len(kinds))
    vectors = np.stack([transform_vector(kind, a, xs.shape[1]) for _ in xs for kind, a in kinds])
    *features, logits = run.predict(layers, transformed_copies(xs, which, vectors), batch_size)
    curves = {"probability": tf.nn.softmax(logits, axis=-1).numpy()[np.arange(len(which)), labels[which]]}
    for layer, f, base in zip(followed, features, base_features):
        curves[layer] = np.linalg.norm(f.reshape(len(which), -1) - base[which].reshape(len(which), -1), axis=1)
    # Rows: images; columns: every (transform, amount) in `kinds` order.
    curves = {k: v.reshape(len(xs), len(kinds)) for k, v in curves.items()}
    column = np.array([kind for kind, _ in kinds])
    return amounts, {kind: {k: v[:, column == kind] for k, v in curves.items()} for kind in TRANSFORMS}


def invariance_figure(run, xs: np.ndarray, names: list[str], labels: list[int | None], ranges: Ranges,
                      batch_size: int, path: str | Path) -> Path:
    """Fig. 5: one row per transform; the first image transformed, conv1 and fc7 distances, p(true)."""
    amounts, curves = invariance_curves(run, xs, labels, ranges, batch_size)
    size = xs.shape[1]
    fig = new_figure(16, 10)
    fig.suptitle(f"{run.record['run_id']}: feature invariance of {len(xs)} image(s)")
    axes = fig.subplots(len(TRANSFORMS), 4)
    for row, kind in zip(axes, TRANSFORMS):
        examples = np.linspace(0, len(amounts[kind]) - 1, 5).round().astype(int)
        shown = [transform_vector(kind, amounts[kind][i], size) for i in examples]
        copies = list(transformed_copies(xs[:1], np.zeros(len(shown), np.int32), np.stack(shown)).as_numpy_iterator())
        row[0].imshow(tile(display_images(run, np.stack(copies)), len(copies), pad=2), interpolation="nearest")
        row[0].set_title(f"{kind}: " + ", ".join(f"{amounts[kind][i]:.3g}" for i in examples), fontsize=9)
        row[0].set_axis_off()
        followed = feature_layers(run)
        for ax, key, ylabel in zip(row[1:], (*followed, "probability"),
                                   (*(f"{n} distance" for n in followed), "p(true class)")):
            for name, curve in zip(names, curves[kind][key]):
                ax.plot(amounts[kind], curve, marker=".", label=name)
            ax.set_xlabel(UNITS[kind], fontsize=9)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.grid(alpha=0.3)
        row[3].set_ylim(-0.02, 1.02)
    axes[0][3].legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def draw_invariance(run_dir: str | Path, images, ranges: Ranges = Ranges(), label: str | None = None,
                    batch_size: int = 256, out: str | Path | None = None,
                    tensorboard: bool = False) -> dict[str, Path]:
    """Fig. 5 for the image files, all in one <out>/invariance.png."""
    check_positive(batch_size=batch_size)
    run = load_run(run_dir, float32=True)
    ranges.amounts(run.spec.input_size)  # bad ranges are refused before anything is computed or written
    xs, names, labels = open_images(run, images, label)
    written = {"invariance": invariance_figure(run, xs, names, labels, ranges, batch_size,
                                               output_dir(run, out) / "invariance.png")}
    return publish(run, written, tensorboard)
