"""train_throughput: tfxfer's trainer against a hand-written plain Keras `model.fit`, side by side.

Both train the same network (build_model), with the same optimizer (make_optimizer) on the same
tf.data pipeline (make_dataset), in this one process, interleaved run by run so that load from
other jobs on the machine hits both alike. Images/s is steady state: the first epoch (tracing) is
left out; each run's median epoch, then the median over runs. Also: float32 against
mixed_bfloat16 (the bf16 speed-up), the achieved FLOP/s from an analytic FLOP count, and the
CPU's peak, both from its specification and measured with a large matmul.

    python benchmarks/train_throughput.py [--repeats 3] [--epochs 4]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as bench


def tfxfer_run(cfg, task) -> dict:
    """tfxfer's own trainer (the loop `tfxfer train` runs), on a scratch run directory."""
    from tfxfer.experiments.runspec import RunSpec
    from tfxfer.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        record = train(RunSpec("baseB", 0, cfg), Path(tmp), task, verbose=False)
        wall = time.perf_counter() - t0
        import json

        history = json.loads((Path(tmp) / "history.json").read_text())
    steady = [h["images"] / h["train_s"] for h in history[1:]]
    return {"images_per_s": bench.median(steady), "epochs": steady, "wall_s": wall, "top1": record["top1"]}


def keras_run(cfg, task) -> dict:
    """What a Keras user writes by hand: compile + fit, defaults everywhere else."""
    import keras

    from tfxfer.data.pipeline import make_dataset
    from tfxfer.models import build_model
    from tfxfer.training.loop import make_optimizer

    recipe = cfg.recipe
    keras.utils.set_random_seed(cfg.seed)
    steps = len(task.train_x) // recipe.batch_size
    model = build_model(task.spec, task.num_classes, seed=cfg.seed, dropout=recipe.dropout,
                        weight_decay=recipe.weight_decay, dtype_policy=recipe.precision)
    model.compile(optimizer=make_optimizer(recipe, steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    ds = make_dataset(task.train_x, task.train_y, input_size=task.spec.input_size, resize_size=task.spec.resize_size,
                      norm=task.norm, batch_size=recipe.batch_size, training=True, seed=cfg.seed,
                      pad=recipe.augment.pad, crop=recipe.augment.crop, flip=recipe.augment.flip)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    times: list[float] = []
    t0 = time.perf_counter()
    model.fit(ds, epochs=recipe.epochs, steps_per_epoch=steps, verbose=0, callbacks=[EpochTimer()])
    wall = time.perf_counter() - t0
    steady = [steps * recipe.batch_size / t for t in times[1:]]
    return {"images_per_s": bench.median(steady), "epochs": steady, "wall_s": wall}


def measured_peak(dtype: str, size: int = 2048, reps: int = 10) -> float:
    """FLOP/s of the best of `reps` size×size matmuls: what a dense kernel attains here."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.linalg.matmul(x, x))
    matmul(a).numpy()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        matmul(a).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def spec_peak(m: dict) -> dict:
    """From the specification: per core and cycle, AVX-512 with two 512-bit FMA pipes does
    2 pipes x 16 float32 lanes x 2 FLOPs = 64 FLOP; VDPBF16PS (AVX512-BF16) does twice that in
    bfloat16. Clock: /proc/cpuinfo's nominal MHz (boost clocks are not visible in this VM)."""
    per_cycle = 64 if m["avx512f"] else 32
    f32 = m["cores"] * m["cpu_mhz"] * 1e6 * per_cycle
    return {"float32": f32, "bfloat16": 2 * f32 if m["avx512_bf16"] else f32}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-per-class", type=int, default=500)
    args = ap.parse_args()

    precisions = ("float32", "mixed_bfloat16")
    cfgs = {p: bench.config(dataset={"train_per_class": args.train_per_class},
                            recipe={"epochs": args.epochs, "precision": p}) for p in precisions}
    task = bench.task(cfgs["float32"])
    runs = {(who, p): [] for who in ("tfxfer", "keras") for p in precisions}
    for i in range(args.repeats):
        for p in precisions:
            for who, fn in (("tfxfer", tfxfer_run), ("keras", keras_run)):
                r = fn(cfgs[p], task)
                runs[who, p].append(r)
                bench.say(f"repeat {i + 1}/{args.repeats} {who:6s} {p:14s} {r['images_per_s']:7.0f} img/s")

    m = bench.machine()
    flops = bench.training_flops(task.spec, task.num_classes)
    peaks = {"spec": spec_peak(m), "measured_matmul": {"float32": measured_peak("float32"),
                                                       "bfloat16": measured_peak("bfloat16")}}
    result = {}
    for p in precisions:
        ours = bench.spread(r["images_per_s"] for r in runs["tfxfer", p])
        theirs = bench.spread(r["images_per_s"] for r in runs["keras", p])
        peak_key = "float32" if p == "float32" else "bfloat16"
        result[p] = {
            "tfxfer_images_per_s": ours, "keras_fit_images_per_s": theirs,
            "ratio": ours["median"] / theirs["median"],
            "pairwise_ratios": [a["images_per_s"] / b["images_per_s"]
                                for a, b in zip(runs["tfxfer", p], runs["keras", p])],
            "achieved_flop_s": ours["median"] * flops,
            "fraction_of_spec_peak": ours["median"] * flops / peaks["spec"][peak_key],
            "fraction_of_measured_matmul_peak": ours["median"] * flops / peaks["measured_matmul"][peak_key],
            "tfxfer_top1": [r["top1"] for r in runs["tfxfer", p]],
            "runs": {"tfxfer": runs["tfxfer", p], "keras": runs["keras", p]},
        }
    bf16 = result["mixed_bfloat16"]["tfxfer_images_per_s"]["median"] / result["float32"]["tfxfer_images_per_s"]["median"]
    payload = {
        "setup": {"arch": "cifar8 width 1", "batch_size": 128, "images_per_epoch": len(task.train_x),
                  "epochs": args.epochs, "repeats": args.repeats, "data": "synthetic 32x32, pad 4 crop + flip",
                  "training_flops_per_image": flops,
                  "flop_count": "analytic: conv/dense multiply-adds x2, forward + weight grads + input grads"},
        "peak_flop_s": peaks, "results": result, "bf16_speedup_tfxfer": bf16,
    }
    ratio = result["float32"]["ratio"]
    bench.write("train_throughput", payload, {
        "train_vs_plain_keras": {"value": ratio, "target": ">= 0.97", "precision": "float32",
                                 "mixed_bfloat16": result["mixed_bfloat16"]["ratio"]},
        "bf16_speedup": {"value": bf16, "target": ">= 1.8", "what": "tfxfer trainer img/s, mixed_bfloat16 / float32"},
    })
    print(f"train_throughput: tfxfer/keras.fit {ratio:.3f} (float32), "
          f"{result['mixed_bfloat16']['ratio']:.3f} (bf16); bf16 speed-up {bf16:.2f}x; "
          f"float32 {result['float32']['tfxfer_images_per_s']['median']:.0f} img/s = "
          f"{result['float32']['achieved_flop_s'] / 1e9:.0f} GFLOP/s "
          f"({100 * result['float32']['fraction_of_spec_peak']:.0f}% of spec peak)")


if __name__ == "__main__":
    main()
