"""Clients with one call shape, `predict(inputs, signature) -> {output: array}`, for a TF Serving
REST endpoint, a TF Serving gRPC endpoint, or an export loaded in this process.

`connect("http://host:8501", model)`, `connect("grpc://host:8500", model)` or
`connect(None, export=PATH)` picks one; they work against TF Serving itself as against `tfxfer serve`.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np

from tfxfer.errors import UserError

DEFAULT_SIGNATURE = "serving_default"


class RestClient:
    """TF Serving's REST API, columnar (`inputs`) requests; bytes travel as {"b64": ...}."""

    def __init__(self, url: str, model: str, version: int | None = None, timeout_s: float = 120.0):
        import requests

        self.model_url = f"{url.rstrip('/')}/v1/models/{model}" + (f"/versions/{version}" if version else "")
        self.session = requests.Session()
        self.timeout_s = timeout_s
        self._outputs: dict[str, list[str]] = {}

    def _call(self, method: str, url: str, **kwargs) -> dict:
        import requests

        try:
            response = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as e:
            raise UserError(f"cannot reach {url}: {e}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code != 200:
            raise UserError(f"{url} answered {response.status_code}: {body.get('error', body)}")
        return body

    def metadata(self) -> dict:
        return self._call("GET", f"{self.model_url}/metadata")

    def output_names(self, signature: str) -> list[str]:
        if signature not in self._outputs:
            defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
            if signature not in defs:
                raise UserError(f"signature {signature!r} not served; the model has: {', '.join(sorted(defs))}")
            self._outputs[signature] = sorted(defs[signature]["outputs"])
        return self._outputs[signature]

    def predict(self, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
        body = {"signature_name": signature, "inputs": {k: _json_value(np.asarray(v)) for k, v in inputs.items()}}
        outputs = self._call("POST", f"{self.model_url}:predict", json=body)["outputs"]
        names = self.output_names(signature)
        # TF Serving writes a lone output bare, several as an object keyed by output name.
        outputs = outputs if len(names) > 1 else {names[0]: outputs}
        return {k: _from_json(v) for k, v in outputs.items()}


def _json_value(x: np.ndarray):
    if x.dtype == object or x.dtype.kind == "S":
        return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(x).tolist()
    return x.tolist()


def _from_json(value) -> np.ndarray:
    """JSON output values as the arrays the gRPC client gives: float32 numbers, bytes strings."""
    x = np.asarray(value)
    if x.dtype.kind == "f":
        return x.astype(np.float32)
    if x.dtype.kind == "U":
        return np.vectorize(str.encode, otypes=[object])(x)
    return x


class GrpcClient:
    """TF Serving's gRPC PredictionService, through the tensorflow-serving-api package's stubs."""

    def __init__(self, target: str, model: str, version: int | None = None, timeout_s: float = 120.0,
                 max_message_bytes: int = 256 << 20):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", max_message_bytes),
                                                              ("grpc.max_send_message_length", max_message_bytes)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.target, self.model, self.version, self.timeout_s = target, model, version, timeout_s

    def _spec(self, spec, signature: str | None = None):
        spec.name = self.model
        if self.version:
            spec.version.value = self.version
        if signature:
            spec.signature_name = signature

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise UserError(f"gRPC {self.target} answered {e.code().name}: {e.details()}") from None

    def metadata(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        return self._call(self.stub.GetModelMetadata, request)

    def predict(self, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.stub.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


class LocalClient:
    """An export loaded in this process: EXPORT_BASE/<name> (its newest version) or a version directory."""

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        from tfxfer.export.layout import versions

        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            have = versions(path)
            if not have:
                raise UserError(f"{path} holds no SavedModel (neither saved_model.pb nor version directories)")
            path = path / str(have[-1])
        self.path = path
        self.model = tf.saved_model.load(str(path))

    def predict(self, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if signature not in self.model.signatures:
            raise UserError(f"signature {signature!r} not in {self.path}; it has: "
                            f"{', '.join(sorted(self.model.signatures))}")
        out = self.model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}


def connect(server: str | None, model: str | None = None, version: int | None = None,
            export: str | os.PathLike | None = None):
    """A client for `server` (http://HOST:PORT for REST, grpc://HOST:PORT for gRPC) or for `export`."""
    if (server is None) == (export is None):
        raise UserError("give exactly one of server (http://HOST:PORT or grpc://HOST:PORT) and export (a path)")
    if export is not None:
        return LocalClient(export)
    if not model:
        raise UserError("model is required with server: the model's directory name in the export base")
    if server.startswith(("http://", "https://")):
        return RestClient(server, model, version)
    if server.startswith("grpc://"):
        return GrpcClient(server[len("grpc://"):], model, version)
    raise UserError(f"server {server!r} invalid; allowed: http://HOST:PORT (REST) or grpc://HOST:PORT (gRPC)")
