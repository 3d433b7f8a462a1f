"""time_to_accuracy: test top-1 against wall time of the converged recipe (cifar8-bn) and of today's
cifar8 findings recipe, side by side in one run, on the task airplane/automobile/bird/cat/deer of the
shared CIFAR-10 (the task the recipes were chosen on, by validation images only).

Each recipe is trained at two lengths, one for each budget the issue names (about 500 s and about
920 s of wall on the 2-core CPU), interleaved so that load from other jobs falls on both alike:
a one-cycle or step schedule ends at its last epoch, so the accuracy a recipe reaches in a budget
is that of a run planned for the budget, not a mid-run snapshot of a longer one. Per run: test
top-1, the wall time of training (the record's wall_s: epochs, validation, checkpoints, test)
and of the whole run (data loading and set-up too), the validation top-1 of every epoch against
elapsed wall time, and conv1's health (correlation with its initialization, live filters by
dominant frequency band).

    python benchmarks/time_to_accuracy.py [--budget short|long|both] [--out DIR]

Writes results/time_to_accuracy.json and `time_to_90_vs_cifar8` in results/summary.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common as bench

TARGET = 0.90
RECIPES = {  # (recipe, budget): a config file, relative to the repository root
    ("cifar8-bn", "short"): "docs/results/recipe_bn/bn_w1.5_sgd.yaml",
    ("cifar8", "short"): "docs/results/recipe_cifar10/adam_dropout0.yaml",
    ("cifar8-bn", "long"): "docs/results/recipe_bn/bn_w1.5_sgd_26ep.yaml",
    ("cifar8", "long"): "docs/results/recipe_cifar10/adam_dropout0_28ep.yaml",
}


def train_one(config_file: str, out: Path) -> dict:
    from tfxfer.config import load_config
    from tfxfer.diagnose.filters import run_health
    from tfxfer.experiments.runner import run
    from tfxfer.runs.finished import load_run
    from tfxfer.runs.spec import RunSpec

    cfg = bench.named_config(str(bench.REPO / config_file), {"out": str(out)})
    t0 = time.perf_counter()
    record = run(RunSpec("baseB", 0, cfg), out, verbose=False)
    whole = time.perf_counter() - t0
    history = json.loads((out / record["run_id"] / "history.json").read_text())
    elapsed, curve = 0.0, []
    for h in history:
        elapsed += h["wall_s"]
        curve.append({"epoch": h["epoch"], "wall_s": round(elapsed, 1), "val_top1": h["val_top1"]})
    health = run_health(load_run(out / record["run_id"], float32=True), max_images=1000).summary()
    return {"config": config_file, "run_id": record["run_id"], "arch": record["arch"], "epochs": record["epochs"],
            "top1": record["top1"], "best_val_top1": record["best_val_top1"], "train_top1": record["train_top1"],
            "wall_s": record["wall_s"], "whole_run_s": round(whole, 1), "images_per_s": record["images_per_s"],
            "curve": curve, "conv1": health}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=("short", "long", "both"), default="both")
    p.add_argument("--out", help="where the runs go (default: a temporary directory, removed after)")
    args = p.parse_args(argv)
    budgets = ("short", "long") if args.budget == "both" else (args.budget,)
    with tempfile.TemporaryDirectory(prefix="tfxfer-tta-") as tmp:
        out = Path(args.out or tmp)
        runs = {}
        for budget in budgets:
            for recipe in ("cifar8-bn", "cifar8"):
                bench.say(f"[{recipe}, {budget}] {RECIPES[recipe, budget]}")
                runs[f"{recipe}@{budget}"] = r = train_one(RECIPES[recipe, budget], out)
                bench.say(f"  test top-1 {r['top1']:.4f} in {r['wall_s']:.0f} s ({r['whole_run_s']:.0f} s with "
                          f"data loading); conv1 init correlation {r['conv1']['init_correlation']}")
    summary = {}
    for budget in budgets:
        bn, old = runs[f"cifar8-bn@{budget}"], runs[f"cifar8@{budget}"]
        summary[budget] = {
            "cifar8_bn_top1": bn["top1"], "cifar8_bn_wall_s": bn["wall_s"],
            "cifar8_top1": old["top1"], "cifar8_wall_s": old["wall_s"],
            "reaches_90": {"cifar8-bn": bn["top1"] >= TARGET, "cifar8": old["top1"] >= TARGET},
            "points_gained": round(100 * (bn["top1"] - old["top1"]), 2),
        }
    bench.write("time_to_accuracy", {"target_top1": TARGET, "recipes": {f"{k[0]}@{k[1]}": v for k, v in RECIPES.items()},
                                     "runs": runs}, {"time_to_90_vs_cifar8": summary})
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
