"""Frozen-prefix caching: what a network's frozen layers 1..n make of a task's images, computed
once and read back by every run that freezes the same layers.

The frozen treatments (AnB, BnB, BnA, AnA, random) never change layers 1..n, so their outputs
(inference mode) are computed once, for a fixed set of views of each image (`pipeline.Views`),
and layers n+1..8 train on them. An entry is keyed by the content of everything that produces
it: the architecture, the compute precision, the weights of layers 1..n, the images, their
preprocessing and the views. So AnB at n and every later run with the same base reads the same
entry, the `random` prefix (the same random layers for every n) is shared, and an entry is never
stale. An entry for layer n is built from the deepest entry below it when one exists (AnB5 from
AnB4's conv4 outputs), so a grid computes each base's prefix once, not once per n.

Entries live under <out>/.cache/prefix/<layer>-<key>/ as features.npy (float16 [N, V, ...],
memory-mapped on read) and meta.json (what made it); each is written to a temporary directory
and renamed into place, so readers see whole entries only and concurrent writers of the same
entry do not clash. Deleting the directory only costs recomputation. With a size budget, the
least recently used entries beyond it are deleted after each new entry (a reader that has one
mapped keeps its pages; the file goes when it lets go).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfxfer.data.pipeline import Normalization, Views, preprocess_views
from tfxfer.models import LAYER_NAMES, ArchSpec

FORMAT = 1  # bump when what an entry holds changes meaning
FEATURES_FILE = "features.npy"
META_FILE = "meta.json"


def cache_dir(out: str | os.PathLike) -> Path:
    return Path(out) / ".cache" / "prefix"


def _keys(model: keras.Model, n: int, images: np.ndarray, views: Views, spec: ArchSpec,
          norm: Normalization) -> list[str]:
    """Keys of the entries for layers 1..n: each hashes all that decides layer k's outputs."""
    h = hashlib.sha256(json.dumps({
        "format": FORMAT, "arch": dataclasses.asdict(spec), "norm": _norm_key(norm),
        "views": dataclasses.asdict(views), "policy": model.get_layer(LAYER_NAMES[0]).dtype_policy.name,
        "images": [list(images.shape), str(images.dtype)]}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(images).data)
    keys = []
    for name in LAYER_NAMES[:n]:
        for w in model.get_layer(name).get_weights():
            h.update(np.ascontiguousarray(w).data)
        keys.append(h.hexdigest()[:20])
    return keys


def _norm_key(norm: Normalization) -> dict:
    # RGB (the default) is left out, so entries made before Normalization had `bgr` stay valid.
    return {k: v for k, v in dataclasses.asdict(norm).items() if k != "bgr" or v}


def prefix_outputs(model: keras.Model, n: int, images: np.ndarray, views: Views, *, spec: ArchSpec,
                   norm: Normalization, root: str | os.PathLike, label: str = "",
                   batch_size: int = 64, max_bytes: int | None = None) -> tuple[np.ndarray, dict]:
    """Layer n's outputs, in inference mode, for every view of every image: float16
    [N, len(views), *layer_shape], memory-mapped from the cache (built first if missing).

    Returns the array and a note of what was done ({"built_from": layer or "images" or None,
    "seconds": ...}). `label` (e.g. the base run id) is recorded for people reading the cache.
    `max_bytes` bounds the cache's size on disk (see `evict`)."""
    t0 = time.perf_counter()
    root = Path(root)
    keys = _keys(model, n, images, views, spec, norm)
    paths = [root / f"{LAYER_NAMES[k]}-{key}" for k, key in enumerate(keys)]
    if (paths[-1] / META_FILE).is_file():
        os.utime(paths[-1] / META_FILE)  # used now: the last to be evicted
        return np.load(paths[-1] / FEATURES_FILE, mmap_mode="r"), {"built_from": None,
                                                                    "seconds": time.perf_counter() - t0}
    # The deepest entry below layer n, if any: only the layers above it are run.
    start = next((k + 1 for k in range(n - 2, -1, -1) if (paths[k] / META_FILE).is_file()), 0)
    if start:
        source = np.load(paths[start - 1] / FEATURES_FILE, mmap_mode="r")
        batches = _feature_batches(source, batch_size * len(views))
    else:
        batches = _view_batches(images, views, spec, norm, batch_size)
    layers = [model.get_layer(name) for name in LAYER_NAMES[start:n]]

    @tf.function(reduce_retracing=True)
    def forward(x):
        x = tf.cast(x, layers[0].compute_dtype)
        for layer in layers:
            x = layer(x, training=False)
        x = tf.cast(x, tf.float16)
        return x, tf.reduce_all(tf.math.is_finite(x))

    shape = tuple(model.get_layer(LAYER_NAMES[n - 1]).output.shape[1:])
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{paths[-1].name}."))
    try:
        out = np.lib.format.open_memmap(tmp / FEATURES_FILE, mode="w+", dtype=np.float16,
                                        shape=(len(images), len(views), *shape))
        done = 0
        for x in batches:
            y, finite = forward(x)
            if not finite:
                raise ValueError(f"{LAYER_NAMES[n - 1]} outputs exceed float16's range; "
                                 "set training.prefix_cache: false for this run")
            y = y.numpy().reshape(-1, len(views), *shape)
            out[done:done + len(y)] = y
            done += len(y)
        out.flush()
        del out
        note = {"built_from": LAYER_NAMES[start - 1] if start else "images", "seconds": time.perf_counter() - t0}
        meta = {"layer": LAYER_NAMES[n - 1], "key": keys[-1], "label": label, "images": len(images),
                "views": dataclasses.asdict(views), "shape": [len(images), len(views), *shape],
                "dtype": "float16", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **note}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, paths[-1])
        except OSError:  # another process wrote the same entry first: theirs is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    features = np.load(paths[-1] / FEATURES_FILE, mmap_mode="r")
    if max_bytes is not None:
        evict(root, max_bytes, keep=paths[-1])
    return features, note


def evict(root: Path, max_bytes: int, keep: Path) -> list[str]:
    """Delete the least recently used entries (by their meta.json's mtime) until the cache holds at
    most `max_bytes`; `keep` (the entry in use) stays whatever its size. Returns the names deleted."""
    entries = []
    for path in root.iterdir():
        try:
            entries.append((os.stat(path / META_FILE).st_mtime, (path / FEATURES_FILE).stat().st_size, path))
        except OSError:  # a scratch directory, or an entry another process just deleted
            continue
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            deleted.append(path.name)
    return deleted


def _view_batches(images: np.ndarray, views: Views, spec: ArchSpec, norm: Normalization, batch_size: int):
    """Preprocessed views of consecutive image batches, flattened to [b * V, size, size, 3]."""
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
        lambda x: tf.reshape(preprocess_views(x, views, input_size=spec.input_size, resize_size=spec.resize_size,
                                              norm=norm), (-1, spec.input_size, spec.input_size, 3)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _feature_batches(features: np.ndarray, rows: int):
    """A cached entry [N, V, ...] as consecutive [rows, ...] batches of its image views."""
    flat = features.reshape(-1, *features.shape[2:])
    for i in range(0, len(flat), rows):
        yield flat[i:i + rows]
