"""What the export and serving tests share: a tiny trained run, reference activations, a live server."""
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import requests
import tensorflow as tf
from conftest import tiny_config

from tfxfer.data.pipeline import make_dataset
from tfxfer.experiments.runner import run
from tfxfer.runs.finished import load_run
from tfxfer.runs.spec import RunSpec

LAYERS = ["conv1", "conv5", "fc6", "fc7"]


def trained_run(tmp_path: Path):
    record = run(RunSpec("baseB", None, tiny_config(tmp_path, recipe={"epochs": 1})), verbose=False)
    return load_run(tmp_path / "runs" / record["run_id"])


def keras_features(finished, images: np.ndarray, layers=LAYERS, conv: str = "avg") -> dict[str, np.ndarray]:
    """The in-process Keras model's activations on uint8 images through the evaluation pipeline."""
    model = keras.Model(finished.model.input, {n: finished.model.get_layer(n).output for n in layers})
    ds = make_dataset(images, np.zeros(len(images), np.int64), input_size=finished.spec.input_size,
                      resize_size=finished.spec.resize_size, norm=finished.norm, batch_size=16, training=False)
    parts = [model(x, training=False) for x, _ in ds]
    out = {}
    for n in layers:
        a = np.concatenate([p[n].numpy() for p in parts])
        if a.ndim == 4:
            a = a.mean(axis=(1, 2)) if conv == "avg" else a.reshape(len(a), -1)
        out[n] = a
    return out


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    return (tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image, quality=90)).numpy()


def decoded(data: bytes) -> np.ndarray:
    """What training sees of an encoded image: the data pipeline's own decoder."""
    from tfxfer.data.sources import decode_image

    return decode_image(tf.constant(data)).numpy()


class Server:
    """`tfxfer serve` in a fresh process, as a user starts it; stopped with SIGTERM."""

    def __init__(self, base: Path, rest_port: int, grpc_port: int, log: Path, *flags: str):
        self.url, self.grpc_target, self.log = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfxfer", "serve", str(base), "--port", str(rest_port), "--grpc-port",
             str(grpc_port), *flags], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, model: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tfxfer serve exited:\n{self.log.read_text()}"
            try:
                if requests.get(f"{self.url}/v1/models/{model}", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"tfxfer serve not ready in {timeout_s} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
