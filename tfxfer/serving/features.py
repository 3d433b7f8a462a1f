"""`tfxfer features`: images → a feature extractor (REST, gRPC or in-process) → an .npz of features.

The .npz holds one array per output of the signature (e.g. `fc7` [N, D]), `labels` [N] (-1 for
images without a class folder), `class_names`, and `paths` for images read from a folder.
Images go to `serving_default` as encoded bytes, decoded in the model's graph: files as they are,
dataset images (decoded arrays) as PNG, which is lossless and, as base64 in JSON, a fraction of
the size and parsing time of pixel values written as JSON numbers.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from tfxfer.data.sources import IMAGE_EXTENSIONS
from tfxfer.errors import UserError
from tfxfer.progress import Bar


def list_images(folder: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """FOLDER/<class>/<image> (labelled by sorted class) or FOLDER/<image> (label -1)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder {str(folder)!r} does not exist or is not a directory")

    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = images(folder), [-1] * len(images(folder))
    for label, name in enumerate(classes):
        found = images(folder / name)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise UserError(f"image folder {str(folder)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}), neither "
                        "directly nor in class folders")
    return paths, np.asarray(labels, dtype=np.int64), classes


def extract(client, batches, total: int, signature: str, verbose: bool = True) -> dict[str, np.ndarray]:
    """Send each batch of inputs; the outputs of all batches, concatenated."""
    bar = Bar(total, "images", enabled=verbose)
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    for inputs in batches:
        for name, value in client.predict(inputs, signature).items():
            parts.setdefault(name, []).append(value)
        done += len(next(iter(inputs.values())))
        bar.update(done)
    bar.close()
    return {name: np.concatenate(values) for name, values in parts.items()}


def folder_features(client, folder, batch_size: int = 32, verbose: bool = True) -> dict[str, np.ndarray]:
    paths, labels, classes = list_images(folder)
    batches = ({"images": np.array([p.read_bytes() for p in paths[i:i + batch_size]], dtype=object)}
               for i in range(0, len(paths), batch_size))
    features = extract(client, batches, len(paths), "serving_default", verbose)
    return {**features, "labels": labels, "class_names": np.array(classes, dtype=str),
            "paths": np.array([str(p) for p in paths], dtype=str)}


def dataset_features(client, dataset: str, part: str = "test", batch_size: int = 32, verbose: bool = True,
                     **load_kwargs) -> dict[str, np.ndarray]:
    from tfxfer.data.registry import load_dataset

    if part not in ("train", "test"):
        raise UserError(f"part {part!r} invalid; allowed: train, test")
    data = load_dataset(dataset, **load_kwargs)
    x, y = (data.train_x, data.train_y) if part == "train" else (data.test_x, data.test_y)
    import tensorflow as tf

    batches = ({"images": np.array([tf.io.encode_png(im).numpy() for im in x[i:i + batch_size]], dtype=object)}
               for i in range(0, len(x), batch_size))
    features = extract(client, batches, len(x), "serving_default", verbose)
    return {**features, "labels": y.astype(np.int64), "class_names": np.array(data.class_names, dtype=str)}


def summary(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """The line `tfxfer features` prints: the file and each feature array's shape."""
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items() if k not in ("class_names", "paths"))
    return f"wrote {path}: {shapes}"


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Written to a temporary file and renamed: a reader never sees half an .npz."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"output {str(path)!r} invalid; allowed: a file name ending in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path
