"""serving_latency: `tfxfer serve` over REST and gRPC against calling the SavedModel in-process.

One small trained run (cifar8) is exported (conv5, fc6, fc7); the same PNG-encoded 32×32 images go
to `serving_default` three ways: the loaded SavedModel's signature in this process, REST
(`requests`, row format with {"b64": ...}) and gRPC (TF Serving's own stubs), each on a
`tfxfer serve` started as a user starts it, with its default batching. For batch 1 and 32:
p50/p99 latency of one client's back-to-back requests, and throughput (images/s) of `--clients`
concurrent clients for `--seconds`; each the median of `--rounds` interleaved rounds. The overhead
ratios divide by the in-process numbers. Server and clients share this machine's cores, as a
sidecar client would.

    python benchmarks/serving_latency.py [--requests 200] [--clients 4] [--seconds 4] [--rounds 3]
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as bench
import numpy as np

# The tests' helpers start `tfxfer serve` as a user does and make the images.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def latency(call, n: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def throughput(make_call, batch: int, clients: int, seconds: float) -> dict:
    """Images/s of `clients` threads, each with its own connection, calling back to back for `seconds`."""
    calls = [make_call() for _ in range(clients)]
    for call in calls:
        call()
    counts, stop = [0] * clients, threading.Event()

    def loop(i):
        while not stop.is_set():
            calls[i]()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"images_per_s": sum(counts) * batch / elapsed, "requests": sum(counts), "clients": clients}


def callers(batch: int, signature, server) -> dict:
    """For each path, a function making one client (its own connection) that sends one request."""
    import grpc
    import requests
    import tensorflow as tf
    from serving_helpers import encode, random_images
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    pngs = [encode(x) for x in random_images(batch, seed=batch)]
    images = tf.constant(pngs)
    body = json.dumps({"instances": [{"b64": base64.b64encode(p).decode()} for p in pngs]})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "feat"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.array(pngs, dtype=object)))

    def in_process():
        return lambda: signature(images=images)

    def rest():
        session = requests.Session()
        url = f"{server.url}/v1/models/feat:predict"

        def call():
            response = session.post(url, data=body, timeout=60)
            assert response.status_code == 200, response.text

        return call

    def grpc_call():
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))
        return lambda: stub.Predict(request, timeout=60)

    return {"in_process": in_process, "rest": rest, "grpc": grpc_call}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per latency measurement")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import tensorflow as tf
    from helpers import free_ports
    from serving_helpers import Server

    from tfxfer.experiments.runner import run
    from tfxfer.export import export_run
    from tfxfer.runs.spec import RunSpec

    tmp = Path(tempfile.mkdtemp(prefix="serving_latency-"))
    cfg = bench.config(out=str(tmp / "runs"), recipe={"epochs": 1},
                 dataset={"train_per_class": 50, "test_per_class": 10, "val_fraction": 0.1})
    bench.say("training a small run to export ...")
    record = run(RunSpec("baseB", None, cfg), verbose=False)
    path = export_run(tmp / "runs" / record["run_id"], ["conv5", "fc6", "fc7"], tmp / "exports", name="feat")
    rest_port, grpc_port = free_ports(2)
    server = Server(tmp / "exports", rest_port, grpc_port, tmp / "serve.log")
    server.wait_ready("feat")
    bench.say(f"serving {path}; REST {server.url}, gRPC {server.grpc_target}")

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    results, summary = {}, {}
    try:
        for batch in (1, 32):
            makers = callers(batch, signature, server)
            # Rounds interleave the three paths, so a burst of load from other jobs hits them alike;
            # each figure is the median over rounds.
            rounds = {name: [] for name in ("in_process", "rest", "grpc")}
            for r in range(args.rounds):
                for name, make in makers.items():
                    bench.say(f"batch {batch}, round {r + 1}/{args.rounds}: {name} ...")
                    rounds[name].append({**latency(make(), args.requests if batch == 1 else args.requests // 4),
                                         **throughput(make, batch, args.clients, args.seconds)})
            row = {name: {**{k: bench.median([m[k] for m in ms]) for k in ("p50_ms", "p99_ms", "images_per_s")},
                          "rounds": ms} for name, ms in rounds.items()}
            for name in ("rest", "grpc"):
                row[name]["p50_overhead_x"] = row[name]["p50_ms"] / row["in_process"]["p50_ms"]
                row[name]["p99_overhead_x"] = row[name]["p99_ms"] / row["in_process"]["p99_ms"]
                row[name]["throughput_ratio"] = row[name]["images_per_s"] / row["in_process"]["images_per_s"]
                summary[f"serving_{name}_b{batch}_p50_overhead_x"] = {"value": row[name]["p50_overhead_x"]}
            results[f"batch_{batch}"] = row
    finally:
        server.stop()

    print(f"{'batch':>5} {'path':>10} {'p50 ms':>8} {'p99 ms':>8} {'img/s':>9} {'p50 x':>6} {'p99 x':>6} {'tput x':>7}")
    for key, row in results.items():
        for name, r in row.items():
            ratios = (f"{r['p50_overhead_x']:6.2f} {r['p99_overhead_x']:6.2f} {r['throughput_ratio']:7.2f}"
                      if name != "in_process" else f"{'':6} {'':6} {'':7}")
            print(f"{key.split('_')[1]:>5} {name:>10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['images_per_s']:9.0f} {ratios}")
    out = bench.write("serving_latency", {"args": vars(args), "export": "cifar8 width 1, layers conv5,fc6,fc7, "
                                    "serving_default on 32x32 PNG", "server": "tfxfer serve defaults "
                                    "(max batch 32, 2 ms batch timeout, 2 batch threads)", "results": results},
                summary)
    bench.say(f"wrote {out}")


if __name__ == "__main__":
    main()
