"""`tfxfer serve` speaks TF Serving's REST and gRPC APIs: features equal the in-process model, a new
version is picked up under load with no failed request, and every bad request gets a 4xx."""
import asyncio
import base64
import json
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from helpers import free_ports
from serving_helpers import (
    LAYERS,
    Server,
    encode,
    keras_features,
    random_images,
    trained_run,
)
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfxfer.cli import main
from tfxfer.data.registry import load_dataset
from tfxfer.export import export_run
from tfxfer.serving.batching import Batcher, BatchingOptions
from tfxfer.serving.client import GrpcClient, LocalClient
from tfxfer.serving.errors import invalid
from tfxfer.serving.features import dataset_features, folder_features
from tfxfer.serving.servables import Signature

TOL = 1e-5
MODEL = "feat"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    finished = trained_run(tmp)
    base = tmp / "exports"
    export_run(finished.run_dir, list(LAYERS), base, name=MODEL)
    rest_port, grpc_port = free_ports(2)
    server = Server(base, rest_port, grpc_port, tmp / "serve.log", "--max-body-mb", "1", "--poll-s", "0.2",
                    "--batch-timeout-ms", "5")
    try:
        server.wait_ready(MODEL)
        yield finished, base, server
    finally:
        assert server.stop() == 0, server.log.read_text()


def predict_rest(server, body, version=None, model=MODEL):
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    return requests.post(server.url + path, data=body if isinstance(body, (bytes, str)) else json.dumps(body),
                         timeout=60)


def grpc_predict(server, inputs, signature="serving_default", **spec):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", MODEL)
    request.model_spec.signature_name = signature
    for k, v in inputs.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return stub.Predict(request, timeout=60)


def test_rest_features_equal_the_keras_model(served):
    finished, _, server = served
    images = random_images(6, seed=10)
    want = keras_features(finished, images)
    # Row format with binary images as {"b64": ...}: one object per image, keyed by output name.
    response = predict_rest(server, {"instances": [{"b64": base64.b64encode(encode(x)).decode()} for x in images]})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert len(rows) == 6 and set(rows[0]) == set(LAYERS)
    for n in LAYERS:
        assert np.abs(np.array([r[n] for r in rows]) - want[n]).max() <= TOL
    # Columnar format, pixels as numbers, to a named signature of a named version.
    response = predict_rest(server, {"signature_name": "features_from_pixels", "inputs": {"pixels": images.tolist()}},
                            version=1)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    for n in LAYERS:
        assert np.abs(np.array(outputs[n]) - want[n]).max() <= TOL
    # classify: strings come back as strings.
    response = predict_rest(server, {"signature_name": "classify",
                                     "instances": [{"b64": base64.b64encode(encode(images[0])).decode()}]})
    assert response.json()["predictions"][0]["top_k_names"][0] in finished.class_names


def test_grpc_with_tf_serving_stubs(served):
    finished, _, server = served
    images = random_images(5, seed=11)
    want = keras_features(finished, images)
    response = grpc_predict(server, {"images": np.array([encode(x) for x in images], dtype=object)})
    assert response.model_spec.name == MODEL and response.model_spec.version.value >= 1
    assert set(response.outputs) == set(LAYERS)
    for n in LAYERS:
        assert np.abs(tf.make_ndarray(response.outputs[n]) - want[n]).max() <= TOL
    response = grpc_predict(server, {"pixels": images}, signature="features_from_pixels_uint8")
    assert np.abs(tf.make_ndarray(response.outputs["fc7"]) - want["fc7"]).max() <= TOL

    channel = grpc.insecure_channel(server.grpc_target)
    meta_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta_request.model_spec.name = MODEL
    meta = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(meta_request, timeout=30)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(defs)
    assert set(defs.signature_def["serving_default"].outputs) == set(LAYERS)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_status_and_metadata_json(served):
    _, _, server = served
    status = requests.get(f"{server.url}/v1/models/{MODEL}", timeout=30).json()
    entry = status["model_version_status"][0]
    assert entry["state"] == "AVAILABLE" and entry["status"] == {"error_code": "OK", "error_message": ""}
    assert requests.get(f"{server.url}/v1/models/{MODEL}/versions/{entry['version']}", timeout=30).status_code == 200
    meta = requests.get(f"{server.url}/v1/models/{MODEL}/metadata", timeout=30).json()
    assert meta["model_spec"]["name"] == MODEL
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["images"]["dtype"] == "DT_STRING"
    assert sig["method_name"] == "tensorflow/serving/predict" and set(sig["outputs"]) == set(LAYERS)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(served):
    _, _, server = served
    good = base64.b64encode(encode(random_images(1, seed=12)[0])).decode()
    cases = [  # (body, model, version, status, words in the error)
        ("{not json", MODEL, None, 400, "JSON Parse error"),
        ("", MODEL, None, 400, "document is empty"),
        ("[1, 2]", MODEL, None, 400, "Is not object"),
        ({"instances": [{"b64": good}], "signature_name": "nope"}, MODEL, None, 400, '"nope" not found'),
        ({"signature_name": 3, "instances": [1]}, MODEL, None, 400, "'signature_name' key must be a string"),
        ({"instances": [{"imagez": {"b64": good}}]}, MODEL, None, 400, "does not have named input: imagez"),
        ({"inputs": {"imagez": [{"b64": good}]}}, MODEL, None, 400, "Missing named input: images"),
        ({"instances": [{"b64": good}], "inputs": [{"b64": good}]}, MODEL, None, 400, "only one of"),
        ({"signature": "x"}, MODEL, None, 400, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, MODEL, None, 400, "No values"),
        ({"instances": [{"b64": "%%%"}]}, MODEL, None, 400, "Unable to base64 decode"),
        ({"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}, MODEL, None, 400,
         "Unknown image file format"),
        ({"instances": [1.5]}, MODEL, None, 400, "not of expected type: string"),
        ({"signature_name": "features_from_pixels", "instances": [[1, 2, 3]]}, MODEL, None, 400,
         "has shape [1,3] but signature 'features_from_pixels' expects [-1,-1,-1,3]"),
        ({"signature_name": "features_from_pixels", "inputs": [[[[1, 2]]], [[[1, 2, 3]]]]}, MODEL, None, 400,
         "one shape"),
        ({"signature_name": "features_from_pixels", "inputs": [[[["a", "b", "c"]]]]}, MODEL, None, 400,
         "not of expected type: float"),
        ({"signature_name": "features_from_pixels_uint8", "inputs": [[[[1, 2, 300]]]]}, MODEL, None, 400,
         "out of range for uint8"),
        ({"signature_name": "features_from_pixels_uint8", "inputs": [[[[1.5, 2, 3]]]]}, MODEL, None, 400,
         "not of expected type: uint8"),
        ({"instances": [{"b64": good}]}, "nope", None, 404, "Servable not found for request: Latest(nope)"),
        ({"instances": [{"b64": good}]}, MODEL, 99, 404, f"Servable not found for request: Specific({MODEL}, 99)"),
        (b"x" * (2 << 20), MODEL, None, 413, "exceeds the limit"),
    ]
    for body, model, version, status, words in cases:
        response = predict_rest(server, body, version, model)
        assert response.status_code == status, (body if len(str(body)) < 200 else "big", response.text)
        assert words in response.json()["error"], (words, response.text)
    for method, path, status, words in (
        ("GET", f"/v1/models/{MODEL}/versions/99", 404, "Could not find version 99"),
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("GET", f"/v1/models/{MODEL}:predict", 400, "Malformed request"),
        ("POST", f"/v1/models/{MODEL}:classify", 400, "Only :predict is served"),
        ("DELETE", f"/v1/models/{MODEL}", 400, "Malformed request"),
        ("GET", "/index.html", 404, "Not found"),
    ):
        response = requests.request(method, server.url + path, data=b"{}", timeout=30)
        assert response.status_code == status and words in response.json()["error"], (path, response.text)
    # gRPC: the same mistakes get INVALID_ARGUMENT / NOT_FOUND.
    for inputs, signature, spec, code, words in (
        ({"imagez": np.array([b"x"], dtype=object)}, "serving_default", {}, grpc.StatusCode.INVALID_ARGUMENT,
         "input tensor alias not found"),
        ({"pixels": np.zeros((1, 8, 8, 3), np.float32)}, "features_from_pixels_uint8", {},
         grpc.StatusCode.INVALID_ARGUMENT, "expects uint8"),
        ({"images": np.array([b"x"], dtype=object)}, "serving_default", {}, grpc.StatusCode.INVALID_ARGUMENT,
         "Unknown image file format"),
        ({"images": np.array([b"x"], dtype=object)}, "serving_default", {"name": "nope"}, grpc.StatusCode.NOT_FOUND,
         "Servable not found"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            grpc_predict(server, inputs, signature, **spec)
        assert error.value.code() == code and words in error.value.details(), error.value.details()
    assert server.proc.poll() is None
    response = predict_rest(server, {"instances": [{"b64": good}]})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1


def test_new_version_is_picked_up_under_concurrent_requests(served):
    finished, base, server = served
    images = random_images(2, seed=13)
    body = json.dumps({"instances": [{"b64": base64.b64encode(encode(x)).decode()} for x in images]})
    want = keras_features(finished, images)["fc7"]
    stop, lock = threading.Event(), threading.Lock()
    failures, versions_seen, count = [], set(), [0]

    def rest_client():
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(f"{server.url}/v1/models/{MODEL}:predict", data=body, timeout=60)
                ok = r.status_code == 200 and np.abs(np.array([p["fc7"] for p in r.json()["predictions"]])
                                                     - want).max() <= TOL
                with lock:
                    count[0] += 1
                    if not ok:
                        failures.append(r.text[:200])
            except requests.RequestException as e:
                failures.append(repr(e))

    def grpc_client():
        while not stop.is_set():
            try:
                r = grpc_predict(server, {"images": np.array([encode(x) for x in images], dtype=object)})
                with lock:
                    count[0] += 1
                    versions_seen.add(r.model_spec.version.value)
            except grpc.RpcError as e:
                failures.append(e.details())

    first = requests.get(f"{server.url}/v1/models/{MODEL}", timeout=30).json()["model_version_status"][0]["version"]
    threads = [threading.Thread(target=f) for f in (rest_client, rest_client, grpc_client, grpc_client)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new = export_run(finished.run_dir, list(LAYERS), base, name=MODEL)
        deadline = time.monotonic() + 60
        while int(new.name) not in versions_seen and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # and keep going on the new version for a moment
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    assert {int(first), int(new.name)} <= versions_seen, versions_seen
    assert count[0] > 20
    status = requests.get(f"{server.url}/v1/models/{MODEL}", timeout=30).json()["model_version_status"]
    assert {s["version"]: s["state"] for s in status} == {new.name: "AVAILABLE", first: "END"}


def test_features_command_rest_grpc_and_in_process(served, tmp_path, capsys):
    finished, base, server = served
    images = random_images(5, seed=14)
    for i, x in enumerate(images):
        cls = tmp_path / "imgs" / ("a" if i < 3 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        (cls / f"{i}.png").write_bytes(encode(x))
    want = keras_features(finished, images)
    out = tmp_path / "rest.npz"
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "--images", str(tmp_path / "imgs"), "--server", server.url, "--model", MODEL, "--out",
              str(out), "--batch-size", "2"])
    assert exit_info.value.code == 0 and "wrote" in capsys.readouterr().out
    with np.load(out) as f:
        assert list(f["labels"]) == [0, 0, 0, 1, 1] and list(f["class_names"]) == ["a", "b"]
        assert max(np.abs(f[n] - want[n]).max() for n in LAYERS) <= TOL
    for client in (GrpcClient(server.grpc_target, MODEL), LocalClient(base / MODEL)):
        got = folder_features(client, tmp_path / "imgs", batch_size=3, verbose=False)
        assert max(np.abs(got[n] - want[n]).max() for n in LAYERS) <= TOL
    # A dataset's decoded images travel as PNG: losslessly.
    data = load_dataset("synthetic", train_per_class=1, test_per_class=2)
    got = dataset_features(GrpcClient(server.grpc_target, MODEL), "synthetic", "test", batch_size=16, verbose=False,
                           train_per_class=1, test_per_class=2)
    want = keras_features(finished, data.test_x)
    assert max(np.abs(got[n] - want[n]).max() for n in LAYERS) <= TOL
    np.testing.assert_array_equal(got["labels"], data.test_y)
    assert list(got["class_names"]) == data.class_names


def test_serve_refuses_a_missing_base_and_a_port_in_use(served, tmp_path, capsys):
    _, base, server = served
    rest_port, grpc_port = (int(a.rsplit(":", 1)[1]) for a in (server.url, server.grpc_target))
    (free,) = free_ports(1)
    for args, message in (
        ([str(tmp_path / "nope"), "--port", str(free)], "does not exist"),
        ([str(base), "--port", str(rest_port), "--grpc-port", str(free)], f"{rest_port} (REST)"),
        ([str(base), "--port", str(free), "--grpc-port", str(grpc_port)], f"{grpc_port} (gRPC)"),
        ([str(base), "--max-batch-size", "0"], "Invalid value for '--max-batch-size': 0 is not in the range x>=1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert predict_rest(server, {"signature_name": "features_from_pixels_uint8",
                                 "inputs": random_images(1).tolist()}).status_code == 200


def test_batcher_merges_concurrent_requests_and_isolates_a_bad_one():
    calls = []

    def run(inputs):
        calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise invalid("negative input")
        return {"y": inputs["x"] * 2}

    spec = tf.TensorSpec([None, 2], tf.float32)
    signature = Signature("s", None, {"x": spec}, {"y": spec})
    signature.run = run

    async def main():
        batcher = Batcher(BatchingOptions(max_batch_size=8, timeout_s=0.05, num_batch_threads=1))
        xs = [np.full((1, 2), i, np.float32) for i in range(6)]
        results = await asyncio.gather(*(batcher.run("servable", signature, {"x": x}) for x in xs))
        assert [r["y"][0, 0] for r in results] == [2.0 * i for i in range(6)]
        assert calls == [6]  # one batch of six rows
        calls.clear()
        xs[2] = -xs[2] - 1
        results = await asyncio.gather(*(batcher.run("servable", signature, {"x": x}) for x in xs),
                                       return_exceptions=True)
        assert [isinstance(r, Exception) for r in results] == [False, False, True, False, False, False]
        assert calls == [6, 1, 1, 1, 1, 1, 1]  # the failed batch, then each request alone
        batcher.shutdown()

    asyncio.run(main())
