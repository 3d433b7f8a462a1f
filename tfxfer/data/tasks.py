"""A run's data: the dataset loaded once, split into tasks A and B, the target task's
train/validation/test images, and the normalization every run on this dataset shares."""
from __future__ import annotations

import dataclasses

import numpy as np

from tfxfer.config import Config
from tfxfer.data import registry
from tfxfer.data.pipeline import Normalization
from tfxfer.data.splits import Split, carve_validation, make_split, task_arrays
from tfxfer.data.types import ImageData
from tfxfer.models import ArchSpec, external, get_arch


@dataclasses.dataclass
class TaskData:
    spec: ArchSpec
    split: Split
    task: str  # "A" or "B": the task trained and tested on
    class_names: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    norm: Normalization
    source_classes: int  # class count of the task a copied base net was trained on

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def arch_spec(config: Config):
    """The network's input geometry: the registry arch's spec (ArchSpec), or a (resolved) base
    model file's (external.ExternalSpec: name, input_size, resize_size, layers)."""
    if config.base_model.path is not None:
        return external.spec_of(config.base_model)
    return get_arch(config.arch.name, config.arch.width, config.arch.variant)


def load_data(config: Config) -> tuple[ImageData, Split, ArchSpec]:
    """Load the configured dataset and split it; every user error surfaces here, before any write."""
    spec = arch_spec(config)
    d = config.dataset
    data = registry.load_dataset(d.name, path=d.path, data_dir=d.data_dir, image_size=spec.resize_size,
                        test_fraction=d.test_fraction, seed=d.seed, train_per_class=d.train_per_class,
                        test_per_class=d.test_per_class)
    s = config.split
    split = make_split(data.class_names, kind=s.kind, seed=s.seed, A=s.A, B=s.B, families=data.families)
    return data, split, spec


def task_data(config: Config, data: ImageData, split: Split, spec: ArchSpec, task: str,
              source: str | None = None) -> TaskData:
    train_x, train_y = task_arrays(data, split, task, "train")
    test_x, test_y = task_arrays(data, split, task, "test")
    if config.dataset.val_fraction > 0:
        train_x, train_y, val_x, val_y = carve_validation(train_x, train_y, config.dataset.val_fraction,
                                                          seed=config.seed)
    else:
        val_x, val_y = train_x[:0], train_y[:0]
    return TaskData(
        spec=spec, split=split, task=task, class_names=split.classes(task),
        train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x, test_y=test_y,
        # One normalization over the whole dataset's training images, so layers copied from a net
        # trained on the other task see inputs scaled exactly as they were trained on (or the
        # fixed preprocessing a model file was trained with).
        norm=Normalization.named(config.base_model.preprocessing, data.train_x),
        source_classes=len(split.classes(source or task)),
    )
