"""A finished run read back from disk: its record, config, architecture, normalization and network."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import yaml

from tfxfer.config import Config
from tfxfer.data.pipeline import Normalization
from tfxfer.errors import UserError
from tfxfer.models import ArchSpec, build_model, get_arch
from tfxfer.runs.layout import CONFIG_FILE, NORMALIZATION_FILE, RESULT_FILE, WEIGHTS_FILE
from tfxfer.runs.records import read_result


@dataclasses.dataclass
class FinishedRun:
    """A finished run read back from disk: everything export, probes and visualizations need."""

    run_dir: Path
    record: dict
    config: Config
    spec: ArchSpec
    norm: Normalization
    model: keras.Model

    @property
    def class_names(self) -> list[str]:
        return self.record["classes"]


def load_run(run_dir: str | Path) -> FinishedRun:
    """A finished run's trained network, rebuilt from its recorded config and final weights."""
    run_dir = Path(run_dir)
    record = read_result(run_dir)
    if record is None:
        raise UserError(f"run directory {run_dir} holds no finished run ({run_dir / RESULT_FILE} is missing)")
    cfg = Config.from_dict(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
    spec = get_arch(cfg.arch.name, cfg.arch.width, cfg.arch.variant)
    model = build_model(spec, len(record["classes"]), dropout=cfg.recipe.dropout,
                        renorm_radius=cfg.arch.renorm_radius, dtype_policy=cfg.recipe.precision,
                        name=record["run_id"].replace("+", "_ft"))
    model.load_weights(run_dir / WEIGHTS_FILE)
    norm = Normalization(**json.loads((run_dir / NORMALIZATION_FILE).read_text()))
    return FinishedRun(run_dir, record, cfg, spec, norm, model)
