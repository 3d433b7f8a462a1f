"""The search space: the config's `tuning.space` as keras-tuner hyper-parameters, and back.

A trial's values become a Config whose recipe carries them, so a trial trains exactly what
`tfxfer train --config` would train with the same values.
"""
from __future__ import annotations

import keras_tuner as kt
from tensorboard.plugins.hparams import api as hparams_api

from tfxfer.config import Config, SearchRange, TuningConfig, tunable_type

# Hyperband sets the epochs of each trial itself, under this name.
HYPERBAND_EPOCHS = "tuner/epochs"


def hyperparameters(tuning: TuningConfig) -> kt.HyperParameters:
    hp = kt.HyperParameters()
    for name, r in tuning.ranges().items():
        tp = tunable_type(name)
        if r.values is not None:
            hp.Choice(name, [tp(v) for v in r.values])
        elif tp is int:
            hp.Int(name, int(r.min), int(r.max), step=int(r.step) if r.step else None,
                   sampling="log" if r.log else "linear")
        else:
            hp.Float(name, r.min, r.max, step=r.step, sampling="log" if r.log else "linear")
    return hp


def recipe_values(values: dict) -> dict:
    """A trial's values as recipe keys: keras-tuner's own bookkeeping dropped, Hyperband's epochs kept."""
    out = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    if HYPERBAND_EPOCHS in values:
        out["epochs"] = int(values[HYPERBAND_EPOCHS])
    return out


def trial_config(base: Config, values: dict) -> Config:
    """The base config with the trial's values in its recipe, validated like any config."""
    data = base.to_dict()
    data["recipe"].update(recipe_values(values))
    return Config.from_dict(data)


def hparams_domains(tuning: TuningConfig, hyperband_epochs: int | None = None) -> list[hparams_api.HParam]:
    """The space as TensorBoard HParams, for the dashboard's axes and filters."""
    out = []
    for name, r in tuning.ranges().items():
        out.append(hparams_api.HParam(name, _domain(name, r)))
    if hyperband_epochs:
        out.append(hparams_api.HParam("epochs", hparams_api.IntInterval(1, hyperband_epochs)))
    return out


def _domain(name: str, r: SearchRange):
    tp = tunable_type(name)
    if r.values is not None:
        return hparams_api.Discrete([tp(v) for v in r.values])
    if tp is int:
        return hparams_api.IntInterval(int(r.min), int(r.max))
    return hparams_api.RealInterval(float(r.min), float(r.max))
