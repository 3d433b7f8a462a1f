"""One registry that names every dataset: `synthetic`, `cifar10`, `cifar100`, `tfds:NAME`, `folder:PATH`.

Every source returns an `ImageData` (`tfxfer.data.types`).
"""
from __future__ import annotations

import dataclasses
import functools

from tfxfer.data import sources
from tfxfer.data.splits import select_per_class
from tfxfer.data.synthetic import load_synthetic
from tfxfer.data.types import ImageData
from tfxfer.errors import UserError


# Every name `load_dataset` accepts; NAME and PATH are placeholders.
DATASETS: dict[str, str] = {
    "synthetic": "24 procedurally drawn 32x32 classes in two families (shapes, textures); no files needed",
    "cifar10": "CIFAR-10 from path, $TFXFER_CIFAR10, or TFDS (which may download)",
    "cifar100": "CIFAR-100 from path, $TFXFER_CIFAR100, or TFDS (which may download)",
    "tfds:NAME": "a TFDS image-classification dataset already prepared in data_dir",
    "folder:PATH": "class folders PATH/{train,test}/<class>/* or PATH/<class>/* (test held out)",
}


# The prefixes of the NAME/PATH entries: "tfds", "folder".
_PREFIXED = {key.partition(":")[0] for key in DATASETS if ":" in key}


def list_datasets() -> list[str]:
    return list(DATASETS)


def load_dataset(
    name: str,
    *,
    path: str | None = None,
    data_dir: str | None = None,
    image_size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    cache_dir: str | None = None,
) -> ImageData:
    """Load dataset `name` (see `DATASETS`) into memory.

    path: a local CIFAR copy (cifar10/cifar100 only). data_dir: the TFDS data directory.
    image_size: the side images are resized to when a dataset's images differ in size.
    test_fraction, seed: the held-out test set of sources without a test split.
    train_per_class, test_per_class: keep at most this many images per class, the first ones in
    a seeded order. cache_dir: where decoded image folders are cached (default $TFXFER_CACHE or
    ~/.cache/tfxfer).
    """
    counts = (("train_per_class", train_per_class), ("test_per_class", test_per_class), ("image_size", image_size))
    for flag, value in counts:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"{flag} {value!r} is invalid; allowed: a whole number of at least 1")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction {test_fraction!r} is out of range; allowed: 0 < test_fraction < 1")
    kind, _, arg = name.partition(":")
    if not ((name in DATASETS and not arg) or (kind in _PREFIXED and arg)):
        raise UserError(f"dataset {name!r} is unknown; allowed: {', '.join(DATASETS)}")
    if path is not None and name not in ("cifar10", "cifar100"):
        raise UserError(
            f"path is only for cifar10 and cifar100; for dataset {name!r} leave it out (a folder is named folder:PATH)"
        )

    if name == "synthetic":
        return load_synthetic(train_per_class=train_per_class or 300, test_per_class=test_per_class or 100, seed=seed)
    if name in ("cifar10", "cifar100"):
        data = sources.load_cifar(name, path=path, data_dir=data_dir, image_size=image_size, cache_dir=cache_dir)
    elif kind == "folder":
        data = sources.read_folder(
            arg, name=name, image_size=image_size, cache_dir=cache_dir, test_fraction=test_fraction, seed=seed
        )
    else:
        data = sources.read_tfds(arg, data_dir=data_dir, image_size=image_size, test_fraction=test_fraction, seed=seed)

    for part, cap in (("train", train_per_class), ("test", test_per_class)):
        if cap is not None:
            x, y = getattr(data, f"{part}_x"), getattr(data, f"{part}_y")
            keep = select_per_class(y, functools.partial(min, cap), seed)
            data = dataclasses.replace(data, **{f"{part}_x": x[keep], f"{part}_y": y[keep]})
    return data
