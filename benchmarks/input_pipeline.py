"""input_pipeline: images/s of the tf.data training pipeline alone against the model's training
images/s, on real CIFAR-10 (configs/cifar10.yaml, task B, batch 128).

The pipeline alone is iterated for one epoch's batches (uint8 images already decoded in memory,
as tfxfer holds every dataset: cast, resize, pad, seeded random crop and flip, standardize, batch),
its construction included. The model's images/s is tfxfer's trainer in steady state (epochs after
the first), in float32 and mixed_bfloat16. The same for frozen-prefix caching: the cached-feature
pipeline (one view per image gathered from the memory-mapped cache, shuffled, batched) against
the suffix training it feeds, at n = 1 (the largest features) and n = 5.

    python benchmarks/input_pipeline.py [--repeats 5] [--epochs 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as bench


def pipeline_rate(make, steps: int, batch: int, repeats: int) -> dict:
    """Images/s of iterating `steps` batches of make(epoch), construction included; one per repeat."""
    rates = []
    for epoch in range(repeats):
        t0 = time.perf_counter()
        for _ in make(epoch).take(steps):
            pass
        rates.append(steps * batch / (time.perf_counter() - t0))
    return bench.spread(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--config", default="cifar10")
    args = ap.parse_args()

    from tfxfer.data.pipeline import fixed_views, make_dataset, make_feature_dataset
    from tfxfer.data.tasks import load_data, task_data
    from tfxfer.runs.finished import load_run
    from tfxfer.training import prefix_cache

    def cfg(precision):
        return bench.named_config(args.config, {"recipe.epochs": args.epochs, "recipe.precision": precision})

    base_cfg = cfg("float32")
    task = task_data(base_cfg, *load_data(base_cfg), task="B")
    recipe = base_cfg.recipe
    batch, steps = recipe.batch_size, len(task.train_x) // recipe.batch_size
    aug = recipe.augment

    def images(epoch):
        return make_dataset(task.train_x, task.train_y, input_size=task.spec.input_size,
                            resize_size=task.spec.resize_size, norm=task.norm, batch_size=batch, training=True,
                            seed=0, epoch=epoch, pad=aug.pad, crop=aug.crop, flip=aug.flip)

    result = {"pipeline_images_per_s": pipeline_rate(images, steps, batch, args.repeats), "model": {}, "cached": {}}
    bench.say(f"pipeline alone: {result['pipeline_images_per_s']['median']:.0f} img/s")
    with tempfile.TemporaryDirectory(prefix="input_pipeline.") as tmp:
        out = Path(tmp)
        for precision in ("float32", "mixed_bfloat16"):
            r = bench.train_timed("baseB", 0, cfg(precision), task, out)
            result["model"][precision] = {"images_per_s": r["images_per_epoch"] / r["epoch_train_s"], "run": r}
            bench.say(f"model {precision}: {result['model'][precision]['images_per_s']:.0f} img/s")
        base = Path(r["run_dir"])
        model = load_run(base).model  # mixed_bfloat16, as the cached runs below; their prefix is its own
        views = fixed_views(input_size=task.spec.input_size, resize_size=task.spec.resize_size, pad=aug.pad,
                            crop=aug.crop, flip=aug.flip)
        for n in (1, 5):
            features, _ = prefix_cache.prefix_outputs(model, n, task.train_x, views, spec=task.spec, norm=task.norm,
                                                      root=prefix_cache.cache_dir(out))
            rate = pipeline_rate(lambda e, f=features: make_feature_dataset(f, task.train_y, batch_size=batch, epoch=e),
                                 steps, batch, args.repeats)
            run = bench.train_timed("BnB", n, cfg("mixed_bfloat16"), task, out, base=base)
            trained = run["images_per_epoch"] / run["epoch_train_s"]
            result["cached"][f"n{n}"] = {"feature_pipeline_images_per_s": rate, "suffix_training_images_per_s": trained,
                                         "ratio": rate["median"] / trained, "feature_shape": list(features.shape[2:])}
            bench.say(f"cached n={n}: pipeline {rate['median']:.0f} img/s, training {trained:.0f} img/s")

    fastest = max(m["images_per_s"] for m in result["model"].values())
    ratio = result["pipeline_images_per_s"]["median"] / fastest
    result["ratio_vs_fastest_model"] = ratio
    bench.write("input_pipeline", {"setup": {"config": f"configs/{args.config}.yaml", "batch_size": batch,
                                             "steps": steps, "repeats": args.repeats}, **result},
                {"pipeline_vs_model": {
                    "value": ratio, "target": ">= 3",
                    "what": "training pipeline img/s alone / tfxfer trainer img/s (faster precision, mixed_bfloat16)",
                    "cached_n1": result["cached"]["n1"]["ratio"], "cached_n5": result["cached"]["n5"]["ratio"]}})
    print(f"input_pipeline: pipeline {result['pipeline_images_per_s']['median']:.0f} img/s vs model "
          f"{fastest:.0f} img/s = {ratio:.1f}x; cached features: "
          + ", ".join(f"{k} {v['ratio']:.1f}x" for k, v in result["cached"].items()))


if __name__ == "__main__":
    main()
