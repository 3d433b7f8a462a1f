"""Whether this machine computes a run's precision natively, and a warning where it does not.

Mixed precision pays only where the hardware has the narrow arithmetic: on a CPU without
AVX512-BF16 or AMX, oneDNN emulates bfloat16 and a `mixed_bfloat16` run is many times slower than
float32 (measured: 12-20x on a 2-core AMD EPYC Zen 2; benchmarks/README.md), and float16 without
AVX512-FP16 or AMX-FP16 likewise (4x). The run is still correct, so this warns rather than refuses:
the precision is part of the recipe and of the run id, and a grid keeps the one it started with.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)

# The CPU flags (as /proc/cpuinfo names them) that give each mixed precision native arithmetic.
NATIVE_FLAGS = {"mixed_bfloat16": ("avx512_bf16", "amx_bf16"), "mixed_float16": ("avx512_fp16", "amx_fp16")}
# How much slower than float32 each ran on an AVX2-only CPU (benchmarks/README.md).
MEASURED_SLOWDOWN = {"mixed_bfloat16": "12-20x", "mixed_float16": "4x"}
_warned: set[str] = set()


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The first CPU's flags from /proc/cpuinfo; None where there is no such file (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def emulated(precision: str, flags: frozenset[str] | None, gpus: int) -> bool:
    """True where `precision` is mixed and would run on a CPU that lacks its native arithmetic
    (unknown flags count as native: no warning without evidence)."""
    native = NATIVE_FLAGS.get(precision)
    return bool(native) and not gpus and flags is not None and not flags.intersection(native)


def warn_if_emulated(precision: str) -> bool:
    """Log one warning line where this machine would emulate `precision`, once per process (a grid
    trains many runs); True if it did."""
    flags = cpu_flags()
    if precision in _warned or not emulated(precision, flags, len(tf.config.list_physical_devices("GPU"))):
        return False
    _warned.add(precision)
    log.warning("warning: precision %s on a CPU without %s is emulated, many times slower than float32 "
                "(%s measured on an AVX2-only CPU); set recipe.precision: float32 (or --precision float32) "
                "for speed, which gives new run ids", precision, " or ".join(NATIVE_FLAGS[precision]),
                MEASURED_SLOWDOWN[precision])
    return True
