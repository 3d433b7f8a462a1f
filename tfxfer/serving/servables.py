"""Loaded model versions and the manager that follows an export base as TF Serving does.

Every model directory under the export base is served; of its complete version directories the
newest is loaded (TF Serving's default `latest` version policy). The manager rescans the base
every few seconds: a new version is loaded beside the old one, which keeps answering until the new
one is ready and then is released. Requests already holding the old version finish on it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from tfxfer.export.layout import versions as complete_versions
from tfxfer.serving.errors import invalid, not_found

log = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass
class Signature:
    name: str
    fn: object  # the loaded ConcreteFunction, called with keyword tensors
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]

    def check(self, inputs: dict[str, np.ndarray]) -> int:
        """Reject inputs the signature cannot take (names, dtype, shape); return their batch size."""
        missing, extra = sorted(set(self.inputs) - set(inputs)), sorted(set(inputs) - set(self.inputs))
        if extra:
            raise invalid(f"input tensor alias not found in signature: {', '.join(extra)}. Inputs expected to be "
                          f"in the set {{{','.join(sorted(self.inputs))}}}.")
        if missing:
            raise invalid(f"Request inputs do not match required inputs for signature {self.name!r}: missing "
                          f"{', '.join(missing)}")
        rows = set()
        for name, spec in self.inputs.items():
            x = inputs[name]
            if x.dtype != np.dtype(spec.dtype.as_numpy_dtype):
                raise invalid(f"input {name!r} has dtype {tf.as_dtype(x.dtype).name} but signature {self.name!r} "
                              f"expects {spec.dtype.name}")
            if not spec.shape.is_compatible_with(x.shape):
                raise invalid(f"input {name!r} has shape {shape_text(tf.TensorShape(x.shape))} but signature {self.name!r} expects "
                              f"{shape_text(spec.shape)}")
            rows.add(x.shape[0])
        if len(rows) > 1:
            raise invalid(f"inputs of signature {self.name!r} differ in batch size: {sorted(rows)}")
        return rows.pop()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self.fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.InvalidArgumentError as e:
            # E.g. bytes that are no image: a fault of the request, not of the server.
            raise invalid(tf_error_line(e.message)) from None
        return {k: v.numpy() for k, v in out.items()}


def shape_text(shape: tf.TensorShape) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def tf_error_line(message: str) -> str:
    """The line of a TensorFlow runtime error that says what went wrong, without graph locations."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [line.strip() for line in message.splitlines()]
    return next((line for line in lines if line and not line.startswith(noise)), first_line(message))


def first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


class Servable:
    """One loaded version of one model."""

    def __init__(self, name: str, version: int, path: Path):
        self.name, self.version, self.path = name, version, path
        meta = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
        graph = next(g for g in meta.meta_graphs if "serve" in g.meta_info_def.tags)
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in graph.signature_def.items():
            self.signature_defs.signature_def[key].CopyFrom(sig)
        self._loaded = tf.saved_model.load(str(path), tags=["serve"])
        self.signatures = {
            key: Signature(key, fn, dict(fn.structured_input_signature[1]), dict(fn.structured_outputs))
            for key, fn in self._loaded.signatures.items()
        }

    def signature(self, name: str | None) -> Signature:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return self.signatures[name]


@dataclasses.dataclass
class _Model:
    loaded: Servable | None = None
    states: dict[int, tuple[int, str]] = dataclasses.field(default_factory=dict)  # version → (State, error)
    failed: dict[int, int] = dataclasses.field(default_factory=dict)  # version → mtime of the failed load


class ServableManager:
    """Follows `base`: `poll()` loads what changed; `get()` and `status()` answer requests."""

    def __init__(self, base: str | os.PathLike):
        self.base = Path(base)
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    def poll(self) -> list[str]:
        """Load each model's newest complete version if it is not the one loaded; what happened, as lines."""
        events = []
        names = sorted(p.name for p in self.base.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if self.base.is_dir() else []
        for name in set(self._models) - set(names):
            events += self._unload(name)
        for name in names:
            have = complete_versions(self.base / name)
            model = self._models.get(name)
            if not have:
                if model is not None:
                    events += self._unload(name)
                continue
            want = have[-1]
            if model is not None and model.loaded is not None and model.loaded.version == want:
                continue
            events += self._load(name, want)
        return events

    def _load(self, name: str, version: int) -> list[str]:
        path = self.base / name / str(version)
        mtime = (path / "saved_model.pb").stat().st_mtime_ns
        with self._lock:
            model = self._models.setdefault(name, _Model())
            if model.failed.get(version) == mtime:
                return []
            model.states[version] = (State.LOADING, "")
        try:
            servable = Servable(name, version, path)
        except Exception as e:  # noqa: BLE001 - a bad export must not take the server down
            message = first_line(str(e)) or type(e).__name__
            with self._lock:
                model.states[version] = (State.END, f"failed to load: {message}")
                model.failed[version] = mtime
            log.warning("model %s version %d failed to load: %s", name, version, message)
            return [f"{name}: version {version} failed to load: {message}"]
        with self._lock:
            old, model.loaded = model.loaded, servable
            model.states[version] = (State.AVAILABLE, "")
            if old is not None:
                model.states[old.version] = (State.END, "")
        return [f"{name}: serving version {version}" + (f" (was {old.version})" if old else "")]

    def _unload(self, name: str) -> list[str]:
        with self._lock:
            model = self._models.get(name)
            if model is None or model.loaded is None:
                return []
            model.states[model.loaded.version] = (State.END, "")
            version, model.loaded = model.loaded.version, None
        return [f"{name}: version {version} removed from disk; unloaded"]

    def get(self, name: str, version: int | None = None) -> Servable:
        with self._lock:
            model = self._models.get(name)
            servable = model.loaded if model else None
        if servable is None or (version is not None and servable.version != version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise not_found(f"Servable not found for request: {request}")
        return servable

    def models(self) -> dict[str, int]:
        with self._lock:
            return {name: m.loaded.version for name, m in self._models.items() if m.loaded is not None}

    def status(self, name: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        with self._lock:
            model = self._models.get(name)
            states = dict(model.states) if model else {}
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in sorted(states, reverse=True):
            state, error = states[v]
            entry = response.model_version_status.add(version=v, state=state)
            entry.status.error_code = 2 if error else 0  # UNKNOWN or OK
            entry.status.error_message = error
        return response
