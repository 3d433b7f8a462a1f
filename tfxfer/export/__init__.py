"""Feature extractors for TF Serving: a finished run cut at chosen layers, exported as a SavedModel."""
from __future__ import annotations

import os
from pathlib import Path

from tfxfer.errors import UserError
from tfxfer.export.layout import publish, update_models_config, versions
from tfxfer.export.savedmodel import build_archive, parse_layers

__all__ = ["export_run", "versions"]


def default_name(run_id: str) -> str:
    # '+' (fine-tuned treatments) is awkward in URLs; the Keras model name uses the same spelling.
    return run_id.replace("+", "_ft")


def export_run(run_dir: str | os.PathLike, layers: list[str], out: str | os.PathLike, *,
               name: str | None = None, version: int | None = None, conv: str = "avg", top_k: int = 5,
               serving_config: str | os.PathLike | None = None) -> Path:
    """Export the run at `run_dir` to out/<name>/<version>/ and return that directory.

    `serving_config`: a TF Serving model_config_list file to add the model to (None: leave it).
    """
    from tfxfer.runs.finished import load_run

    layers = parse_layers(layers)
    if not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k {top_k!r} invalid; allowed: a whole number of at least 1")
    finished = load_run(run_dir)
    name = name or default_name(finished.record["run_id"])
    archive = build_archive(finished, layers, conv=conv, top_k=top_k)
    provenance = {"run_id": finished.record["run_id"], "run_dir": str(Path(run_dir).resolve()),
                  "layers": layers, "conv": conv, "classes": finished.class_names,
                  "top1": finished.record["top1"], "arch": finished.spec.name,
                  "input_size": finished.spec.input_size, "resize_size": finished.spec.resize_size}
    target = publish(out, name, version, lambda tmp: archive.write_out(str(tmp), verbose=False), provenance)
    if serving_config is not None:
        update_models_config(serving_config, name, Path(out) / name)
    return target
