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
    python benchmarks/time_to_accuracy.py --budget long --tag amx --epochs cifar8-bn@long=52 --epochs cifar8@long=90

Writes results/time_to_accuracy.json and `time_to_90_vs_cifar8` in results/summary.json. The
budgets are wall times, the configs' epochs what fitted them on the 2-core CPU they were chosen on;
on a faster CPU, `--epochs RECIPE@BUDGET=N` trains a recipe for N epochs instead (its schedule
stretched to them) so that each run fills the budget there, and `--tag` writes that machine's
results beside the reference one's (results/time_to_accuracy_<tag>.json, summary key
`time_to_90_vs_cifar8_<tag>`).
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
BUDGET_S = {"short": 500, "long": 920}  # the budgets: wall seconds of training on the 2-core CPU
RECIPES = {  # (recipe, budget): a config file, relative to the repository root
    ("cifar8-bn", "short"): "docs/results/recipe_bn/bn_w1.5_sgd.yaml",
    ("cifar8", "short"): "docs/results/recipe_cifar10/adam_dropout0.yaml",
    ("cifar8-bn", "long"): "docs/results/recipe_bn/bn_w1.5_sgd_26ep.yaml",
    ("cifar8", "long"): "docs/results/recipe_cifar10/adam_dropout0_28ep.yaml",
}


def train_one(config_file: str, out: Path, epochs: int | None = None) -> dict:
    from tfxfer.config import load_config
    from tfxfer.diagnose.filters import run_health
    from tfxfer.experiments.runner import run
    from tfxfer.runs.finished import load_run
    from tfxfer.runs.spec import RunSpec

    cfg = bench.named_config(str(bench.REPO / config_file),
                             {"out": str(out), **({"recipe.epochs": epochs} if epochs else {})})
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


def epochs_override(text: str) -> tuple[str, int]:
    """`cifar8-bn@long=52` -> ("cifar8-bn@long", 52), for argparse."""
    key, _, value = text.partition("=")
    runs = [f"{recipe}@{budget}" for recipe, budget in RECIPES]
    if key not in runs or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RECIPE@BUDGET=EPOCHS, RECIPE@BUDGET one of "
                                         f"{', '.join(runs)} and EPOCHS a positive integer")
    return key, int(value)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=("short", "long", "both"), default="both")
    p.add_argument("--out", help="where the runs go (default: a temporary directory, removed after)")
    p.add_argument("--epochs", type=epochs_override, action="append", default=[],
                   help="RECIPE@BUDGET=N: train that run for N epochs instead of its config's (repeatable)")
    p.add_argument("--tag", help="another machine's measurement: its own results file and summary key")
    args = p.parse_args(argv)
    epochs = dict(args.epochs)
    budgets = ("short", "long") if args.budget == "both" else (args.budget,)
    with tempfile.TemporaryDirectory(prefix="tfxfer-tta-") as tmp:
        out = Path(args.out or tmp)
        runs = {}
        for budget in budgets:
            for recipe in ("cifar8-bn", "cifar8"):
                key = f"{recipe}@{budget}"
                bench.say(f"[{recipe}, {budget}] {RECIPES[recipe, budget]}, {epochs.get(key, 'its')} epochs")
                runs[key] = r = train_one(RECIPES[recipe, budget], out, epochs.get(key))
                bench.say(f"  test top-1 {r['top1']:.4f} in {r['wall_s']:.0f} s ({r['whole_run_s']:.0f} s with "
                          f"data loading); conv1 init correlation {r['conv1']['init_correlation']}")
    summary = {}
    for budget in budgets:
        bn, old = runs[f"cifar8-bn@{budget}"], runs[f"cifar8@{budget}"]
        summary[budget] = {
            "cifar8_bn_top1": bn["top1"], "cifar8_bn_wall_s": bn["wall_s"],
            "cifar8_top1": old["top1"], "cifar8_wall_s": old["wall_s"],
            "budget_s": BUDGET_S[budget],
            "reaches_90": {"cifar8-bn": bn["top1"] >= TARGET, "cifar8": old["top1"] >= TARGET},
            "within_budget": {"cifar8-bn": bn["wall_s"] <= BUDGET_S[budget], "cifar8": old["wall_s"] <= BUDGET_S[budget]},
            "points_gained": round(100 * (bn["top1"] - old["top1"]), 2),
        }
    suffix = f"_{args.tag}" if args.tag else ""
    bench.write("time_to_accuracy" + suffix,
                {"target_top1": TARGET, "recipes": {f"{k[0]}@{k[1]}": v for k, v in RECIPES.items()},
                 "epochs_overridden": epochs, "runs": runs}, {"time_to_90_vs_cifar8" + suffix: summary})
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
