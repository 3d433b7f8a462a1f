"""TF Serving's on-disk layout: EXPORT_BASE/<name>/<version>/{saved_model.pb, variables/}.

Versions are integers from 1; a version directory is never overwritten and appears whole: it is
written under a hidden temporary name in the same model directory (TF Serving and `tfxfer serve`
ignore names that are not integers) and renamed into place only once complete.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Beside the SavedModel, where TF Serving expects extra files (it reads only its warm-up file there).
PROVENANCE_FILE = Path("assets.extra") / "tfxfer_export.json"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"model name {name!r} invalid; allowed: letters, digits, '_', '.', '-', starting with a "
                        "letter or digit")
    return name


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The complete version directories of one model, ascending (those holding saved_model.pb)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.name.isdigit() and int(p.name) > 0 and (p / "saved_model.pb").is_file())


def publish(base: str | os.PathLike, name: str, version: int | None,
            write: Callable[[Path], None], provenance: dict) -> Path:
    """Run `write(tmp_dir)` and rename the result to base/name/version (the next one when None)."""
    model_dir = Path(base) / check_name(name)
    taken = {int(p.name) for p in model_dir.iterdir() if p.name.isdigit()} if model_dir.is_dir() else set()
    if version is None:
        version = max(taken, default=0) + 1
    elif not isinstance(version, int) or version < 1:
        raise UserError(f"version {version!r} invalid; allowed: a whole number of at least 1")
    target = model_dir / str(version)
    if version in taken:
        raise UserError(f"version {version} of model {name!r} already exists at {target}; versions are never "
                        f"overwritten (next free: {max(taken) + 1})")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        write(tmp)
        (tmp / PROVENANCE_FILE).parent.mkdir(exist_ok=True)
        (tmp / PROVENANCE_FILE).write_text(json.dumps({**provenance, "name": name, "version": version}, indent=2))
        # mkdtemp makes the directory 0700; a server running as another user must read it.
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            d.chmod(0o755)
        # os.rename refuses a non-empty target, so a version exported concurrently is never replaced.
        os.rename(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write version {version} of model {name!r} to {target}: {e.strerror}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def update_models_config(config_file: str | os.PathLike, name: str, base_path: str | os.PathLike) -> Path:
    """Add (or repoint) `name` in a TF Serving model_config_list file, keeping every other entry."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config_file = Path(config_file)
    config = model_server_config_pb2.ModelServerConfig()
    if config_file.is_file():
        try:
            text_format.Parse(config_file.read_text(), config)
        except text_format.ParseError as e:
            raise UserError(f"{config_file} is not a TF Serving model config (model_config_list): {e}") from None
    models = config.model_config_list.config
    entry = next((m for m in models if m.name == name), None) or models.add()
    entry.name = name
    entry.base_path = str(Path(base_path).resolve())
    entry.model_platform = "tensorflow"
    atomic_write_text(config_file, "# Written by `tfxfer export`; TF Serving reads it with --model_config_file.\n"
                      + text_format.MessageToString(config))
    return config_file
