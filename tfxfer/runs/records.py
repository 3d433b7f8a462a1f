"""Result records: what one finished run measured, one JSON file written atomically, last."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tfxfer.atomic import atomic_write_text
from tfxfer.runs.layout import RESULT_FILE

# Field names fixed by DESIGN.md: reports and outside tools read them.
# train_top1 came later (records before it lack it): base nets' top-1 on their training images
# (validation images excluded) as evaluation sees them (centre crop, no dropout); None for others.
# val_top1_last came later too: the validation top-1 of the last (up to) 3 epochs, oldest first.
# cut and base_model_sha256 came later (None in others): a base model file's runs' cut layer (n is
# its index in base_model.cuts) and the file's sha256.
# weights_sha256 and base_weights_sha256 came later (records before them lack them): the digest of the
# run's final weights, and of the base weights it copied from (None for a run that copies none), so a
# base retrained after its weights were lost is shown to be the net its dependents copied, or not.
RESULT_FIELDS = ("run_id", "treatment", "n", "base_run_id", "dataset", "arch", "split", "split_seed", "split_hash",
                 "classes", "seed", "top1", "top5", "best_val_top1", "val_top1_last", "train_top1", "epochs", "wall_s",
                 "images_per_s", "precision", "device", "version", "config", "cut", "base_model_sha256",
                 "weights_sha256", "base_weights_sha256")


def weights_sha256(model) -> str:
    """sha256 of a model's weight values, in the model's order (shapes and dtypes included): the
    same digest for the same net whatever file it was saved in."""
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def write_result(run_dir: str | os.PathLike, record: dict) -> Path:
    missing = [f for f in RESULT_FIELDS if f not in record]
    if missing:
        raise ValueError(f"result record lacks {missing}")
    path = Path(run_dir) / RESULT_FILE
    atomic_write_text(path, json.dumps({f: record[f] for f in RESULT_FIELDS}, indent=2) + "\n")
    return path


def read_result(run_dir: str | os.PathLike) -> dict | None:
    """The run's result record, or None while the run is unfinished."""
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
