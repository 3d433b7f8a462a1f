"""What a probe is trained and tested on, and the paper's k-per-class protocol over seeded folds.

A target is the other task of the run's own split (task B for a base trained on A), any registered
dataset (`cifar10`, `tfds:NAME`, ...) or a folder of images (`folder:PATH`). The k training images
of each class come from the target's training images; test images come from its test images when
it has its own (a dataset's test part, a folder's test/), else from the images not drawn for
training, as in Fei-Fei et al.'s Caltech-101 protocol ("the rest as test").
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from tfxfer.errors import UserError

TASKS = ("A", "B")


@dataclasses.dataclass
class Target:
    name: str  # as written in tables, e.g. "cifar10 task B"
    dataset: str  # the dataset's registry name
    class_names: list[str]
    train_x: np.ndarray  # uint8 [N, H, W, 3]: where the k training images per class are drawn from
    train_y: np.ndarray
    test_x: np.ndarray | None  # None: test images are the training images not drawn
    test_y: np.ndarray | None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_")

    @property
    def pooled(self) -> bool:
        return self.test_x is None

    def images(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of "train" or "test" (the same pool when the target has no test images of its own)."""
        if part == "test" and not self.pooled:
            return self.test_x, self.test_y
        return self.train_x, self.train_y


def resolve_target(run, dataset: str | None = None, data_path: str | None = None,
                   data_dir: str | None = None) -> Target:
    """The probe's target for a finished run (default: the other task of the run's split)."""
    from tfxfer.data.registry import load_dataset
    from tfxfer.data.splits import task_arrays
    from tfxfer.data.tasks import load_data
    from tfxfer.treatments import get_treatment

    cfg = run.config
    if dataset is None:
        dataset = "A" if get_treatment(run.record["treatment"]).target == "B" else "B"
    if dataset in TASKS:
        data, split, _ = load_data(cfg)
        parts = [task_arrays(data, split, dataset, part) for part in ("train", "test")]
        return Target(f"{data.name} task {dataset}", data.name, list(split.classes(dataset)), *parts[0], *parts[1])
    if dataset == cfg.dataset.name:  # the run's own dataset: its recorded location unless told otherwise
        data_path, data_dir = data_path or cfg.dataset.path, data_dir or cfg.dataset.data_dir
    data = load_dataset(dataset, path=data_path, data_dir=data_dir, image_size=run.spec.resize_size,
                        seed=cfg.dataset.seed)
    kind, _, folder = dataset.partition(":")
    if kind == "folder" and not (Path(folder).expanduser() / "train").is_dir():
        # A folder without train/ and test/ is one pool; the loader's held-out carve is undone.
        return Target(dataset, dataset, data.class_names, np.concatenate([data.train_x, data.test_x]),
                      np.concatenate([data.train_y, data.test_y]), None, None)
    return Target(dataset, dataset, data.class_names, data.train_x, data.train_y, data.test_x, data.test_y)


@dataclasses.dataclass(frozen=True)
class Fold:
    k: int  # training images per class
    index: int  # 0..folds-1
    seed: int  # everything random in this fold (draws, cross-validation, scratch training) follows it
    train: np.ndarray  # indices into target.images("train")
    test: np.ndarray  # indices into target.images("test")


def fold_seed(seed: int, index: int) -> int:
    return seed + index


def draw_fold(target: Target, k: int, seed: int, index: int = 0, test_per_class: int = 50) -> Fold:
    """k random training images per class and up to test_per_class test images per class.

    The draws depend on (seed, class) only, not on k: a fold's k = 5 images are among its k = 10,
    so curves over k differ by the images added, not by a new draw.
    """
    rng = np.random.default_rng(seed)
    y = target.train_y
    orders = [rng.permutation(np.flatnonzero(y == c)) for c in range(len(target.class_names))]
    short = [(name, len(o)) for name, o in zip(target.class_names, orders) if len(o) < k + target.pooled]
    if short:
        name, have = min(short, key=lambda s: s[1])
        need = f"more than {k} (k training images and at least one test image)" if target.pooled else f"{k}"
        raise UserError(f"per_class {k} is too many for {target.name}: class {name!r} has {have} images; "
                        f"allowed: classes with {need}")
    train = np.concatenate([o[:k] for o in orders])
    if target.pooled:
        test = np.concatenate([o[k:k + test_per_class] for o in orders])
    else:
        test_rng = np.random.default_rng([seed, 1])
        test_y = target.test_y
        test_orders = [test_rng.permutation(np.flatnonzero(test_y == c)) for c in range(len(target.class_names))]
        empty = [name for name, o in zip(target.class_names, test_orders) if not len(o)]
        if empty:
            raise UserError(f"{target.name} has no test images of class {empty[0]!r}; allowed: a target whose "
                            "every class has test images")
        test = np.concatenate([o[:test_per_class] for o in test_orders])
    return Fold(k, index, seed, train, test)
