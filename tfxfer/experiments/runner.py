"""Run one RunSpec to completion: reuse a finished run, train the base it copies from first."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import yaml

from tfxfer.config import Config
from tfxfer.data.pipeline import Normalization
from tfxfer.data.tasks import load_data, task_data
from tfxfer.errors import UserError
from tfxfer.experiments.runspec import RunSpec
from tfxfer.models import ArchSpec, build_model, get_arch
from tfxfer.training.loop import CONFIG_FILE, NORMALIZATION_FILE, WEIGHTS_FILE, train
from tfxfer.training.records import read_result
from tfxfer.treatments import get_treatment


def run(spec: RunSpec, out: str | Path | None = None, loaded=None, verbose: bool = True) -> dict:
    """The run's result record: read back if it finished before, else trained now (resuming)."""
    out = Path(out or spec.config.out)
    run_dir = out / spec.run_id
    done = read_result(run_dir)
    if done is not None:
        print(f"{spec.run_id}: finished before (top1 {done['top1']:.4f}); reusing {run_dir}")
        return done
    loaded = loaded or load_data(spec.config)
    base_record = None
    if spec.base is not None:
        base_record = read_result(out / spec.base.run_id) or run(spec.base, out, loaded, verbose)
    t = get_treatment(spec.treatment)
    data, split, _ = loaded
    arch = spec.config.arch  # loaded data may be shared by the variants of one arch: each has its own layers
    task = task_data(spec.config, data, split, get_arch(arch.name, arch.width, arch.variant), task=t.target,
                     source=t.source)
    run_dir.mkdir(parents=True, exist_ok=True)
    base_weights = out / base_record["run_id"] / WEIGHTS_FILE if base_record else None
    record = train(spec, run_dir, task, base_weights=base_weights,
                   base_run_id=base_record["run_id"] if base_record else None, verbose=verbose)
    print(f"{record['run_id']}: top1 {record['top1']:.4f}  top5 {record['top5']:.4f}  "
          f"({record['epochs']} epochs, {record['wall_s']:.0f} s) -> {run_dir}")
    return record


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
        raise UserError(f"run directory {run_dir} holds no finished run ({run_dir / 'result.json'} is missing)")
    cfg = Config.from_dict(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
    spec = get_arch(cfg.arch.name, cfg.arch.width, cfg.arch.variant)
    model = build_model(spec, len(record["classes"]), dropout=cfg.recipe.dropout,
                        renorm_radius=cfg.arch.renorm_radius, dtype_policy=cfg.recipe.precision,
                        name=record["run_id"].replace("+", "_ft"))
    model.load_weights(run_dir / WEIGHTS_FILE)
    norm = Normalization(**json.loads((run_dir / NORMALIZATION_FILE).read_text()))
    return FinishedRun(run_dir, record, cfg, spec, norm, model)


def load_run_model(run_dir: str | Path) -> keras.Model:
    return load_run(run_dir).model
