"""What the visualizations share beyond the finished run (`tfxfer.runs.finished`): image files as its
network sees them (decoded, resized, centre-cropped and standardized exactly as in evaluation), the
checks of their arguments, and where figures go."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfxfer.data.sources import _decode_files
from tfxfer.errors import UserError
from tfxfer.models import LAYER_NAMES
from tfxfer.runs.finished import FinishedRun

CONV_LAYERS = tuple(n for n in LAYER_NAMES if n.startswith("conv"))


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


def open_images(run: FinishedRun, paths, label: str | None = None):
    """Image files → (network inputs [N, S, S, 3], display names, true labels or None)."""
    xs = run.inputs(read_images(paths))
    names = [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]
    return xs, names, true_labels(run, paths, label)


def output_dir(run: FinishedRun, out: str | Path | None) -> Path:
    """Where figures go: `out`, else <run>/visualize."""
    return Path(out) if out is not None else run.run_dir / "visualize"
