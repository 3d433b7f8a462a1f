"""`ImageData`: what every dataset source returns, and what splits, validation carving and the
tf.data pipeline start from. Below the registry and its readers, so they all import it one way."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ImageData:
    """uint8 images held in memory, labels 0..C-1 over the dataset's own classes, and the class
    names in label order."""

    name: str
    class_names: list[str]
    train_x: np.ndarray  # uint8 [N, H, W, 3]
    train_y: np.ndarray  # int64 [N], indexes class_names
    test_x: np.ndarray
    test_y: np.ndarray
    # Named groups of classes (e.g. synthetic's two families, CIFAR-10 vehicles/animals) that a
    # `dissimilar` split may refer to by name.
    families: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])
