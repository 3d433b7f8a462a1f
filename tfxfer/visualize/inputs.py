"""What every visualization reads: a finished run as a float32 network, and image files as that
network sees them (decoded, resized, centre-cropped and standardized exactly as in evaluation)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfxfer.data.pipeline import preprocess
from tfxfer.data.sources import _decode_files
from tfxfer.errors import UserError
from tfxfer.models import LAYER_NAMES, build_model
from tfxfer.runs.finished import FinishedRun, load_run

CONV_LAYERS = tuple(n for n in LAYER_NAMES if n.startswith("conv"))


def load_float32_run(run_dir: str | Path) -> FinishedRun:
    """The finished run, its network rebuilt in float32: projections and distances are measured in
    full precision even when the run trained under mixed precision (its variables are float32)."""
    run = load_run(run_dir)
    if run.config.recipe.precision == "float32":
        return run
    model = build_model(run.spec, len(run.class_names), dropout=run.config.recipe.dropout,
                        renorm_radius=run.config.arch.renorm_radius, dtype_policy="float32",
                        name=run.model.name)
    model.set_weights(run.model.get_weights())
    return dataclasses.replace(run, model=model)


def check_conv_layer(layer: str) -> str:
    if layer not in CONV_LAYERS:
        what = "has no feature maps" if layer in LAYER_NAMES else "is unknown"
        raise UserError(f"layer {layer!r} {what}; allowed: {', '.join(CONV_LAYERS)}")
    return layer


def check_positive(**values) -> None:
    for name, value in values.items():
        if value is None or value < 1:
            raise UserError(f"{name.replace('_', '-')} {value!r} is invalid; allowed: a whole number of at least 1")


def read_images(paths) -> list[np.ndarray]:
    """Decode image files to RGB uint8 arrays (any size, grayscale/RGBA/palette become RGB)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise UserError("no image files given; allowed: one or more image paths")
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"image file {p!r} does not exist")
    return _decode_files(paths)


def network_inputs(run: FinishedRun, images) -> np.ndarray:
    """uint8 images [H, W, 3] of any size → the network's float32 input batch [N, S, S, 3]."""
    spec = run.spec
    return np.stack([preprocess(im, input_size=spec.input_size, resize_size=spec.resize_size,
                                norm=run.norm).numpy() for im in images])


def display_images(run: FinishedRun, x: np.ndarray) -> np.ndarray:
    """Network inputs back to displayable RGB in 0..1 (undoing the standardization)."""
    pixels = x * np.asarray(run.norm.std, np.float32) + np.asarray(run.norm.mean, np.float32)
    return np.clip(pixels / 255.0, 0.0, 1.0)


def true_labels(run: FinishedRun, paths, label: str | None) -> list[int | None]:
    """Each image's true class: `label` if given, else its folder's name when that is one of the
    run's classes (as in <data>/test/<class>/*.jpg), else None (the figures then use the top class)."""
    names = list(run.class_names)
    if label is not None:
        if label not in names:
            raise UserError(f"label {label!r} is not a class of run {run.record['run_id']}; "
                            f"allowed: {', '.join(names)}")
        return [names.index(label)] * len(paths)
    return [names.index(Path(p).parent.name) if Path(p).parent.name in names else None for p in paths]


def submodel(model: keras.Model, layers) -> keras.Model:
    """The run's network with the outputs of `layers` (block names or "logits") as its outputs."""
    return keras.Model(model.input, [model.output if n == "logits" else model.get_layer(n).output
                                     for n in layers])


def predict(model: keras.Model, elements: tf.data.Dataset | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Run `model` over unbatched elements in batches of `batch_size`; one array per output.

    Called eagerly batch by batch: a fresh sub-model per figure would otherwise retrace a
    `model.predict` function each time."""
    if isinstance(elements, np.ndarray):
        elements = tf.data.Dataset.from_tensor_slices(elements)
    parts = []
    for batch in elements.batch(batch_size).prefetch(tf.data.AUTOTUNE):
        out = model(batch, training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(p) for p in zip(*parts)]


def open_images(run: FinishedRun, paths, label: str | None = None):
    """Image files → (network inputs [N, S, S, 3], display names, true labels or None)."""
    xs = network_inputs(run, read_images(paths))
    names = [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]
    return xs, names, true_labels(run, paths, label)


def output_dir(run: FinishedRun, out: str | Path | None) -> Path:
    """Where figures go: `out`, else <run>/visualize."""
    return Path(out) if out is not None else run.run_dir / "visualize"
