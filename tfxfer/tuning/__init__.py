"""Hyper-parameter search over a treatment's recipe with keras-tuner (`tfxfer tune`)."""
from tfxfer.tuning.tuner import TuneResult, tune

__all__ = ["TuneResult", "tune"]
