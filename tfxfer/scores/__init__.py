"""Transferability scores: cheap estimates, from features or a source classifier's outputs and the
target labels alone, of how well a network's layer will transfer (issue 23).

The numerical core is in :mod:`tfxfer.scores.metrics` (numpy/scipy, float64): LogME, LEEP, NCE,
H-score, the Ledoit-Wolf shrinkage H-score and TransRate, and the registry ``METRICS`` with
``get_metric``. Every score is "higher is more transferable".
"""

from tfxfer.scores.metrics import (
    FEATURES,
    METRICS,
    SOURCE_PROBS,
    Metric,
    get_metric,
    hscore,
    hscore_shrinkage,
    leep,
    logme,
    nce,
    transrate,
)

__all__ = [
    "FEATURES",
    "METRICS",
    "SOURCE_PROBS",
    "Metric",
    "get_metric",
    "hscore",
    "hscore_shrinkage",
    "leep",
    "logme",
    "nce",
    "transrate",
]
