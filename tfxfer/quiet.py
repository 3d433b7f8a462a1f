"""Keep TensorFlow's C++ start-up lines (no CUDA driver, cuInit failed, the oneDNN and CPU
instruction notices, absl's "All log messages before absl::InitializeLog()") out of a command's
output.

TF_CPP_MIN_LOG_LEVEL silences TensorFlow's own logging once it is initialized, but absl prints
the first of those lines while TensorFlow's shared libraries load, before that variable is read.
So the import of `tensorflow` itself runs with the process's stderr (file descriptor 2) pointed
at /dev/null, and is put back as soon as it returns: an import error still raises, and is shown.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys

LEVEL = "3"  # TensorFlow's C++ log: errors too (the cuInit one); its Python errors still raise


@contextlib.contextmanager
def stderr_to_devnull():
    """File descriptor 2, which C++ code writes to directly, points at /dev/null inside."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietLoader(importlib.abc.Loader):
    """The `tensorflow` package's own loader, run with stderr silenced."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with stderr_to_devnull():
            self.loader.exec_module(module)

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the standard finder does, with a loader that silences its start-up."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def silence_tensorflow(verbose: bool = False) -> None:
    """Unless `verbose` or the user set TF_CPP_MIN_LOG_LEVEL (then TensorFlow logs as they asked),
    silence TensorFlow's start-up lines in this process (processes it starts inherit the log
    level). Call it before anything imports TensorFlow; a no-op once it is loaded."""
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = LEVEL
    if not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())
