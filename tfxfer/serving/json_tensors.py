"""TF Serving's REST JSON ↔ numpy, as tensorflow_serving/util/json_tensor.cc defines it.

Requests: `{"signature_name": ..., "instances": [...]}` (row format: one element per batch row;
an element is a value for the single input, or an object naming every input) or
`{"signature_name": ..., "inputs": ...}` (columnar: a value for the single input, or an object of
named inputs). Binary strings are `{"b64": "..."}`. Responses mirror the request format:
`{"predictions": [...]}` or `{"outputs": ...}`; string outputs whose name ends in `_bytes` are
written as `{"b64": ...}`.
"""
from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf

from tfxfer.serving.errors import invalid
from tfxfer.serving.servables import Signature

ROW, COLUMNAR = "row", "columnar"
_FLOAT32_MAX_INT = 2 ** 24 - 1  # larger integers do not fit a float32 exactly


def parse_request(body: bytes, signature_of) -> tuple[Signature, dict[str, np.ndarray], str]:
    """The signature (`signature_of(name)`), its inputs as arrays and the request format."""
    doc = parse_json(body)
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {_short(doc)} not formatted correctly. 'signature_name' key must be a string "
                      "value.")
    signature = signature_of(name)
    specs = signature.inputs
    if "instances" in doc and "inputs" in doc:
        raise invalid("JSON Value: not formatted correctly expecting only one of 'inputs' or 'instances' keys to "
                      "exist")
    if "instances" in doc:
        return signature, _from_instances(doc["instances"], specs), ROW
    if "inputs" in doc:
        return signature, _from_inputs(doc["inputs"], specs), COLUMNAR
    raise invalid("Missing 'inputs' or 'instances' key")


def parse_json(body: bytes) -> dict:
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise invalid(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise invalid(f"JSON Parse error: {type(e).__name__}: {e}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_short(doc)} Is not object")
    return doc


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _from_instances(instances, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid("JSON Value: Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid("JSON Value: No values in 'instances' array")
    if not (isinstance(instances[0], dict) and not _is_b64(instances[0])):
        if len(specs) > 1:
            raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors "
                          "required as per tensorinfo_map")
        # One input: the list of rows is that input's batch, with rows of one shape.
        (name, spec), = specs.items()
        try:
            return {name: to_array(instances, spec.dtype)}
        except ValueError as e:
            raise invalid(f"Failed to process 'instances' list. Error: {e}") from None
    columns: dict[str, list[np.ndarray]] = {name: [] for name in specs}
    for i, row in enumerate(instances):
        if not isinstance(row, dict) or _is_b64(row):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        unknown = sorted(set(row) - set(specs))
        if unknown:
            raise invalid(f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. Error: JSON "
                          f"object: does not have named input: {unknown[0]}")
        if set(row) != set(specs):
            raise invalid(f"Failed to process element: {i} of 'instances' list. JSON object keys must be equal to: "
                          f"{','.join(sorted(specs))}")
        for name, spec in specs.items():
            try:
                columns[name].append(to_array(row[name], spec.dtype))
            except ValueError as e:
                raise invalid(f"Failed to process element: {i} key: {name} of 'instances' list. Error: {e}") from None
    out = {}
    for name, rows in columns.items():
        shapes = {r.shape for r in rows}
        if len(shapes) > 1:
            raise invalid(f"input {name!r}: instances differ in shape: {sorted(shapes)}")
        out[name] = np.stack(rows)
    return out


def _from_inputs(inputs, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(specs) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required "
                          "as per tensorinfo_map")
        inputs = {next(iter(specs)): inputs}
    out = {}
    for name, spec in specs.items():
        if name not in inputs:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        try:
            out[name] = to_array(inputs[name], spec.dtype)
        except ValueError as e:
            raise invalid(str(e)) from None
    return out


def to_array(value, dtype: tf.DType) -> np.ndarray:
    """A JSON value (nested lists of one shape) as an array of `dtype`; ValueError says what is wrong."""
    if dtype == tf.string:
        shape = _shape(value)
        flat = [_to_bytes(v) for v in _leaves(value, shape)]
        return np.array(flat, dtype=object).reshape(shape)
    try:
        x = np.asarray(value)
    except ValueError:
        raise ValueError(f"JSON Value: {_short(value)} is not a list of lists of one shape") from None
    kind = x.dtype.kind
    if kind not in "iuf":
        raise ValueError(f"JSON Value: {_short(value)} is not of expected type: {dtype.name}")
    if dtype.is_floating:
        if kind in "iu" and x.size and np.abs(x).max() > (_FLOAT32_MAX_INT if dtype == tf.float32 else 2 ** 53 - 1):
            raise ValueError(f"Cannot convert JSON value: {_short(value)} to {dtype.name} without loss of precision.")
        finite = x[np.isfinite(x)] if kind == "f" else x
        if finite.size and np.abs(finite).max() > dtype.max:
            raise ValueError(f"Cannot convert JSON value: {_short(value)} to {dtype.name} without loss of precision.")
    elif dtype.is_integer:
        if kind == "f":
            raise ValueError(f"JSON Value: {_short(value)} Type: Number is not of expected type: {dtype.name}")
        if x.size and (x.min() < dtype.min or x.max() > dtype.max):
            raise ValueError(f"JSON Value: {_short(value)} is out of range for {dtype.name} "
                             f"[{dtype.min}, {dtype.max}]")
    else:
        raise ValueError(f"inputs of type {dtype.name} are not supported")
    return x.astype(dtype.as_numpy_dtype)


def _shape(value) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _leaves(value, shape: tuple[int, ...], level: int = 0):
    if isinstance(value, list):
        if level >= len(shape) or len(value) != shape[level]:
            raise ValueError(f"Encountered list at unexpected size: {len(value)} at level: {level} expected shape: "
                             f"{list(shape)}")
        for v in value:
            yield from _leaves(v, shape, level + 1)
    elif level != len(shape):
        raise ValueError(f"JSON Value: {_short(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                         f"Expected at level: {len(shape)}")
    else:
        yield value


def _to_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("Unable to base64 decode") from None
    raise ValueError(f"JSON Value: {_short(value)} is not of expected type: string (a string or {{\"b64\": ...}})")


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def to_json(x: np.ndarray, name: str):
    """An output array (or one row of it) as JSON values; `_bytes` string outputs as {"b64": ...}."""
    if x.dtype == object:
        if name.endswith("_bytes"):
            encode = lambda b: {"b64": base64.b64encode(b).decode()}
        else:
            encode = lambda b: b.decode("utf-8", "replace")
        return np.vectorize(encode, otypes=[object])(x).tolist() if x.ndim else encode(x.item())
    return x.tolist()


def response_json(outputs: dict[str, np.ndarray], request_format: str) -> str:
    if request_format == COLUMNAR:
        body = {name: to_json(x, name) for name, x in outputs.items()}
        return json.dumps({"outputs": body if len(body) > 1 else next(iter(body.values()))})
    rows = {x.shape[0] if x.ndim else None for x in outputs.values()}
    if len(rows) != 1 or None in rows:
        raise invalid(f"outputs differ in batch size or have none: {sorted(map(str, rows))}")
    columns = {name: to_json(x, name) for name, x in outputs.items()}
    if len(columns) == 1:
        return json.dumps({"predictions": next(iter(columns.values()))})
    n = rows.pop()
    return json.dumps({"predictions": [{name: col[i] for name, col in columns.items()} for i in range(n)]})
