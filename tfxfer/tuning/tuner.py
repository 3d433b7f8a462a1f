"""`tfxfer tune`: keras-tuner searches a treatment's recipe, each trial an ordinary tfxfer run.

Each trial turns its values into a Config (tfxfer.tuning.space) and trains it with the runner into
its own directory under the search's keras-tuner project, `<out>/tune/<name>/trial_<id>/<run_id>/`;
its score is the final-epoch top-1 on the validation images carved from the training images
(`dataset.val_fraction`), never the test images. keras-tuner keeps the search's state in that
project directory, so rerunning the same command continues it: finished trials are kept, an
interrupted one runs again from its last checkpoint. Local, or distributed with keras-tuner's
chief/worker environment variables (tfxfer.tuning.oracle).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from pathlib import Path

import grpc
import keras
import keras_tuner as kt
import tensorflow as tf
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.src.distribute import utils as dist_utils
from tensorboard.plugins.hparams import api as hparams_api

from tfxfer.atomic import atomic_write_text
from tfxfer.config import Config, dump_config
from tfxfer.data.tasks import load_data
from tfxfer.errors import UserError
from tfxfer.experiments.runner import run
from tfxfer.runs.layout import HISTORY_FILE
from tfxfer.runs.spec import RunSpec
from tfxfer.training.tensorboard import RunLogger
from tfxfer.tuning.oracle import ORACLES, serve
from tfxfer.tuning.space import (
    hparams_domains,
    hyperparameters,
    recipe_values,
    trial_config,
)

OBJECTIVE = kt.Objective("val_top1", direction="max")
BEST_CONFIG = "best.yaml"
POLL_S = 1.0  # how long a waiting worker sleeps between asks


@dataclasses.dataclass
class TuneResult:
    project_dir: Path
    best_config: Path | None  # None on a worker: the chief writes it
    best_values: dict
    best_val_top1: float | None
    completed: int


def project_dir(spec: RunSpec) -> Path:
    """The search's keras-tuner project: named for what it searches, so the same command resumes it."""
    cfg = spec.config.to_dict()
    tuning = {k: v for k, v in cfg["tuning"].items() if k not in ("max_trials", "worker_timeout_s")}
    ident = {"run": spec.run_id, "tuning": tuning}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return Path(spec.config.out) / "tune" / f"{spec.treatment}{spec.n or ''}-{spec.config.tuning.tuner}-{digest}"


def make_oracle(config: Config):
    t = config.tuning
    kwargs = {"objective": OBJECTIVE, "hyperparameters": hyperparameters(t), "seed": t.seed,
              "tune_new_entries": False, "allow_new_entries": False, "worker_timeout_s": t.worker_timeout_s}
    if t.tuner == "hyperband":
        oracle = ORACLES["hyperband"](max_epochs=config.recipe.epochs, **kwargs)
        oracle.max_trials = t.max_trials  # keras-tuner's Hyperband has no cap of its own; the base oracle's works
        return oracle
    return ORACLES[t.tuner](max_trials=t.max_trials, **kwargs)


class RecipeTuner(kt.engine.base_tuner.BaseTuner):
    """Runs trials as tfxfer runs; the chief (KERASTUNER_TUNER_ID=chief) only serves the oracle."""

    def __init__(self, config: Config, treatment: str, n: int | None, project: Path, verbose: bool = True):
        super().__init__(make_oracle(config), directory=str(project.parent), project_name=project.name)
        self.config, self.treatment, self.n, self.verbose = config, treatment, n, verbose
        self.oracle.verbose = 1 if verbose else 0
        self._loaded = None
        self._asked = False

    @property
    def tb_dir(self) -> Path:
        return Path(self.project_dir) / "tb"

    def search(self):
        if dist_utils.is_chief_oracle():
            self.save()
            serve(self.oracle, POLL_S)
            return
        self._loaded = load_data(self.config)  # the dataset's user errors surface before any trial
        super().search()

    def pre_create_trial(self):
        # A worker told to wait (IDLE) asks again after a pause, not in a tight loop.
        if self._asked:
            time.sleep(POLL_S)
        self._asked = True

    def on_trial_begin(self, trial):
        self._asked = False
        keras.backend.clear_session()

    def run_trial(self, trial):
        values = trial.hyperparameters.values
        spec = RunSpec(self.treatment, self.n, trial_config(self.config, values))
        out = Path(self.get_trial_dir(trial.trial_id))
        print(f"tuner {self.tuner_id} trial {trial.trial_id}: {recipe_values(values)} -> {out / spec.run_id}")
        with _Heartbeat(self.oracle, trial.trial_id, self.config.tuning.worker_timeout_s / 4, self._is_worker()):
            record = run(spec, out=out, loaded=self._loaded, verbose=self.verbose)
        history = json.loads((out / record["run_id"] / HISTORY_FILE).read_text())
        score = history[-1]["val_top1"]
        logger = RunLogger(self.tb_dir / f"trial_{trial.trial_id}", {"run_id": record["run_id"],
                                                                     **recipe_values(values)})
        for h in history:
            logger.epoch(h["epoch"], {k: h[k] for k in ("train_loss", "train_top1", "val_loss", "val_top1")})
        print(f"tuner {self.tuner_id} trial {trial.trial_id}: val_top1 {score:.4f}")
        return {OBJECTIVE.name: score}

    def on_trial_end(self, trial):
        if trial.status in (TrialStatus.INVALID, TrialStatus.FAILED):
            last = (trial.message or "").strip().splitlines()[-1:] or ["no message"]
            print(f"tuner {self.tuner_id} trial {trial.trial_id} failed: {last[0]}")
        super().on_trial_end(trial)

    def write_hparams_config(self) -> None:
        """The HParams dashboard's axes: the search space and the objective (once per search)."""
        if any(self.tb_dir.glob("events.out.tfevents.*")):
            return
        epochs = self.config.recipe.epochs if self.config.tuning.tuner == "hyperband" else None
        with tf.summary.create_file_writer(str(self.tb_dir)).as_default():
            hparams_api.hparams_config(hparams=hparams_domains(self.config.tuning, epochs),
                                       metrics=[hparams_api.Metric(OBJECTIVE.name, display_name="validation top-1")])


class _Heartbeat:
    """While a worker trains, renew its lease with the chief every `interval` seconds (a GetTrial call)."""

    def __init__(self, oracle, trial_id: str, interval: float, enabled: bool):
        self.oracle, self.trial_id, self.interval, self.enabled = oracle, trial_id, interval, enabled
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(self.interval):
            try:
                self.oracle.get_trial(self.trial_id)
            except grpc.RpcError as e:  # the chief briefly unreachable: the next beat tries again
                print(f"heartbeat for trial {self.trial_id} failed: {type(e).__name__}")

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


def tune(config: Config, treatment: str = "baseB", n: int | None = None, verbose: bool = True) -> TuneResult:
    """Search the recipe of `treatment` (local, or this process's part of a distributed search)."""
    if config.dataset.val_fraction <= 0:
        raise UserError("config key dataset.val_fraction: 0 leaves no validation images to tune on; "
                        "expected a fraction in (0, 1)")
    if config.tuning.tuner == "hyperband" and "epochs" in config.tuning.space:
        raise UserError("config key tuning.space.epochs: hyperband chooses each trial's epochs itself "
                        "(up to recipe.epochs); remove epochs from the space or pick tuner random or bayesian")
    spec = RunSpec(treatment, n, config)
    tuner = RecipeTuner(config, treatment, spec.n, project_dir(spec), verbose=verbose)
    worker = tuner._is_worker()
    if not worker:
        tuner.write_hparams_config()
    tuner.search()
    if worker:
        return TuneResult(Path(tuner.project_dir), None, {}, None, 0)
    return _report(tuner)


def _report(tuner: RecipeTuner) -> TuneResult:
    oracle = tuner.oracle
    completed = [t for t in oracle.trials.values() if t.status == TrialStatus.COMPLETED]
    project = Path(tuner.project_dir)
    if not completed:
        print(f"no trial finished; nothing to write in {project}")
        return TuneResult(project, None, {}, None, 0)
    best = oracle.get_best_trials(1)[0]
    values = recipe_values(best.hyperparameters.values)
    path = project / BEST_CONFIG
    atomic_write_text(path, dump_config(trial_config(tuner.config, best.hyperparameters.values)))
    print(f"{len(completed)} trials finished; best trial {best.trial_id}: val_top1 {best.score:.4f} with {values}")
    n = f" --n {tuner.n}" if tuner.n else ""
    print(f"best config: {path}  (tfxfer train --config {path} --treatment {tuner.treatment}{n})")
    return TuneResult(project, path, values, best.score, len(completed))
