"""train_throughput: tfxfer's trainer against a hand-written plain Keras `model.fit`, side by side.

Both train the same network (build_model), with the same optimizer (make_optimizer) on the same
tf.data pipeline (make_dataset), in this one process, interleaved run by run so that load from
other jobs on the machine hits both alike. Images/s is steady state: the first epoch (tracing) is
left out; each run's median epoch, then the median over runs. Also: float32 against
mixed_bfloat16 (the bf16 speed-up), the achieved FLOP/s from an analytic FLOP count, and the
CPU's peak, both from its specification and measured with a large matmul.

    python benchmarks/train_throughput.py [--repeats 3] [--epochs 4] [--tag avx2]

--tag names another machine's measurement: results/train_throughput_<tag>.json and summary keys
ending in _<tag>, beside (not over) the reference machine's.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as bench


def tfxfer_run(cfg, task) -> dict:
    """tfxfer's own trainer (the loop `tfxfer train` runs), in a scratch directory."""
    with tempfile.TemporaryDirectory() as tmp:
        r = bench.train_timed("baseB", 0, cfg, task, Path(tmp))
    history = r.pop("history")
    steady = [h["images"] / h["train_s"] for h in history[1:]]
    # Whole epochs too: training plus what tfxfer adds per epoch (validation, checkpoint, TensorBoard).
    whole = [h["images"] / h["wall_s"] for h in history[1:]]
    return {"images_per_s": bench.median(steady), "epochs": steady, "whole_epoch_images_per_s": bench.median(whole),
            "wall_s": r["wall_s"], "top1": r["top1"]}


def keras_run(cfg, task) -> dict:
    """What a Keras user writes by hand: compile + fit, defaults everywhere else."""
    import keras

    from tfxfer.data.pipeline import make_dataset
    from tfxfer.models import build_model
    from tfxfer.training.loop import make_optimizer
    from tfxfer.training.strategy import make_strategy

    recipe = cfg.recipe
    keras.utils.set_random_seed(cfg.seed)
    steps = len(task.train_x) // recipe.batch_size
    with make_strategy(cfg.training).scope():  # MirroredStrategy where there are GPUs, as tfxfer's
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


def fp32_flop_per_cycle(m: dict) -> int:
    """Two FMA pipes x float32 lanes (16 with AVX-512, 8 with AVX2) x 2 FLOPs."""
    return 64 if m["avx512f"] else 32


def spec_peak(m: dict) -> dict:
    """The CPU's peak, two ways. From the specification: per core and cycle, AVX-512 with two
    512-bit FMA pipes (AMD Zen 5, CPU family 26) does 2 pipes x 16 float32 lanes x 2 FLOPs = 64
    FLOP (AVX2's two 256-bit pipes, Zen 2: 32); VDPBF16PS (AVX512-BF16) twice that in bfloat16
    (without it, bfloat16 is emulated at float32's rate at best); times the cores and /proc/cpuinfo's
    nominal clock (the VM shows no boost clock). Measured: the best of ten 2048x2048 matmuls
    (oneDNN), the most a dense kernel attains here; it implies the clock the cores really ran at."""
    f32 = m["cores"] * m["cpu_mhz"] * 1e6 * fp32_flop_per_cycle(m)
    return {"float32": f32, "bfloat16": 2 * f32 if m["avx512_bf16"] else f32}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--arch", default="cifar8", help="cifar8, or caffenet (227x227) on a GPU")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precisions", default="float32,mixed_bfloat16",
                    help="comma-separated; float32 first (the reference); on a GPU: float32,mixed_float16")
    ap.add_argument("--tag", help="another machine's measurement: its own results file and summary keys")
    args = ap.parse_args()

    precisions = args.precisions.split(",")
    cfgs = {p: bench.config(dataset={"train_per_class": args.train_per_class}, arch={"name": args.arch},
                            recipe={"epochs": args.epochs, "precision": p, "batch_size": args.batch_size})
            for p in precisions}
    task = bench.task(cfgs[precisions[0]])
    runs = {(who, p): [] for who in ("tfxfer", "keras") for p in precisions}
    for i in range(args.repeats):
        for p in precisions:
            for who, fn in (("tfxfer", tfxfer_run), ("keras", keras_run)):
                r = fn(cfgs[p], task)
                runs[who, p].append(r)
                bench.say(f"repeat {i + 1}/{args.repeats} {who:6s} {p:14s} {r['images_per_s']:7.0f} img/s")

    m = bench.machine()
    flops = bench.training_flops(task.spec, task.num_classes)
    peak_dtypes = ("float32", "bfloat16") if not m["gpus"] else ()
    peaks = {"spec_at_nominal_clock": spec_peak(m),
             "measured_matmul": {d: measured_peak(d) for d in peak_dtypes}}
    if peak_dtypes:
        peaks["implied_clock_ghz"] = peaks["measured_matmul"]["float32"] / (m["cores"] * fp32_flop_per_cycle(m) * 1e9)
    result = {}
    for p in precisions:
        ours = bench.spread(r["images_per_s"] for r in runs["tfxfer", p])
        theirs = bench.spread(r["images_per_s"] for r in runs["keras", p])
        dtype = "float32" if p == "float32" else p.removeprefix("mixed_")
        measured = peaks["measured_matmul"].get(dtype)
        result[p] = {
            "tfxfer_images_per_s": ours, "keras_fit_images_per_s": theirs,
            "ratio": ours["median"] / theirs["median"],
            "pairwise_ratios": [a["images_per_s"] / b["images_per_s"]
                                for a, b in zip(runs["tfxfer", p], runs["keras", p])],
            "whole_epoch_ratio": bench.median(r["whole_epoch_images_per_s"] for r in runs["tfxfer", p])
            / theirs["median"],
            "achieved_flop_s": ours["median"] * flops,
            "fraction_of_measured_matmul_peak": ours["median"] * flops / measured if measured else None,
            "tfxfer_top1": [r["top1"] for r in runs["tfxfer", p]],
            "runs": {"tfxfer": runs["tfxfer", p], "keras": runs["keras", p]},
        }
    ref = result[precisions[0]]
    speedups = {p: result[p]["tfxfer_images_per_s"]["median"] / ref["tfxfer_images_per_s"]["median"]
                for p in precisions[1:]}
    payload = {
        "setup": {"arch": f"{args.arch} width 1", "batch_size": args.batch_size, "epochs": args.epochs,
                  "images_per_epoch": len(task.train_x), "repeats": args.repeats,
                  "data": "synthetic, pad 4 crop + flip", "training_flops_per_image": flops,
                  "flop_count": "analytic: conv/dense multiply-adds x2, forward + weight grads + input grads "
                                "(none below conv1)",
                  "images_per_s": "steady state: epochs after the first, training time only (the whole epoch, "
                                  "with validation and checkpoint, as whole_epoch_ratio)"},
        "peak_flop_s": peaks, "peak_note": spec_peak.__doc__, "results": result, "speedup_over_float32": speedups,
    }
    summary = {"train_vs_plain_keras": {
        "value": ref["ratio"], "target": ">= 0.97", "precision": precisions[0],
        "whole_epoch": ref["whole_epoch_ratio"], "pairwise": ref["pairwise_ratios"],
        **{p: result[p]["ratio"] for p in precisions[1:]}}}
    if "mixed_bfloat16" in speedups:
        summary["bf16_speedup"] = {"value": speedups["mixed_bfloat16"], "target": ">= 1.8",
                                   "what": "tfxfer trainer img/s, mixed_bfloat16 / float32, side by side",
                                   "keras_fit": result["mixed_bfloat16"]["keras_fit_images_per_s"]["median"]
                                   / ref["keras_fit_images_per_s"]["median"]}
    suffix = "".join(f"_{part}" for part in (None if args.arch == "cifar8" else args.arch, args.tag) if part)
    bench.write(f"train_throughput{suffix}", payload,
                {f"{key}_{args.tag}" if args.tag else key: value for key, value in summary.items()})
    print(f"train_throughput: tfxfer/keras.fit {ref['ratio']:.3f} ({precisions[0]}); "
          + "; ".join(f"{p}: tfxfer/keras.fit {result[p]['ratio']:.3f}, {speedups[p]:.2f}x over {precisions[0]}"
                      for p in precisions[1:])
          + f"; {ref['tfxfer_images_per_s']['median']:.0f} img/s = {ref['achieved_flop_s'] / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
