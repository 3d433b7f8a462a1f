"""One registry that names every dataset: `synthetic`, `cifar10`, `cifar100`, `tfds:NAME`, `folder:PATH`.

Every source returns an `ImageData`: uint8 images held in memory, labels 0..C-1 over the
dataset's own classes, and the class names in label order. Task splits, validation carving and
the tf.data pipeline all start from it.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ImageData:
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
