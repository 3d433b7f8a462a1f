"""frozen_treatments: epoch time of AnB and BnB at n = 1..7, with and without the prefix cache,
against baseB's, on real CIFAR-10 (configs/cifar10.yaml: one random 5/5 split, cifar8, batch 128).

baseA and baseB are trained first (`--epochs` epochs; their weights are what AnB/BnB copy). Then
for each n, AnB and BnB run uncached and cached side by side, `--epochs` epochs each; an epoch's
time is the median of the epochs after the first (the first traces the step function and builds
the cache entry; builds are reported on their own). Entries are built as a grid builds them: n
ascending, each from the entry below it. At n = 5 the cached/uncached pair is repeated
`--repeats` times for the headline ratio. An epoch's time is its whole wall time (training,
validation, checkpoint, TensorBoard); training alone is reported beside it.

    python benchmarks/frozen_treatments.py [--epochs 3] [--repeats 3] [--precision float32]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _common as bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--n", default="1,2,3,4,5,6,7")
    ap.add_argument("--config", default="cifar10", help="a config of configs/ (quickstart: a quick smoke run)")
    args = ap.parse_args()
    ns = [int(v) for v in args.n.split(",")]

    from tfxfer.data.tasks import load_data, task_data

    def cfg(cache: bool):
        return bench.named_config(args.config, {"recipe.epochs": args.epochs, "recipe.precision": args.precision,
                                   "training.prefix_cache": cache})

    loaded = load_data(cfg(True))
    tasks = {(t, s): task_data(cfg(True), *loaded, task=t, source=s) for t, s in (("A", None), ("B", None), ("B", "A"))}
    with tempfile.TemporaryDirectory(prefix="frozen_treatments.") as tmp:
        out = Path(tmp)
        base = {t: bench.train_timed(f"base{t}", 0, cfg(True), tasks[t, None], out) for t in "AB"}
        bench.say(f"baseB: {base['B']['epoch_wall_s']:.1f} s/epoch")
        runs = []
        for n in ns:
            for name, src in (("AnB", "A"), ("BnB", "B")):
                task = tasks["B", "A" if src == "A" else None]
                for cache in ((False, True) * args.repeats if n == 5 else (False, True)):
                    r = bench.train_timed(name, n, cfg(cache), task, out, base=Path(base[src]["run_dir"]))
                    runs.append(r)
                    bench.say(f"{name}{n} cache={cache!s:5s} {r['epoch_wall_s']:6.2f} s/epoch "
                              f"(train {r['epoch_train_s']:.2f} s; cache build {r['prefix_cache_s']:.1f} s) "
                              f"top1 {r['top1']:.3f}")

    base_epoch = base["B"]["epoch_wall_s"]
    table = {}
    for name in ("AnB", "BnB"):
        for n in ns:
            rows = {c: [r for r in runs if r["treatment"] == name and r["n"] == n and r["prefix_cache"] == c]
                    for c in (False, True)}
            un = bench.median(r["epoch_wall_s"] for r in rows[False])
            ca = bench.median(r["epoch_wall_s"] for r in rows[True])
            table[f"{name}{n}"] = {
                "uncached_epoch_s": un, "cached_epoch_s": ca, "speedup": un / ca,
                "train_only_speedup": bench.median(r["epoch_train_s"] for r in rows[False])
                / bench.median(r["epoch_train_s"] for r in rows[True]),
                "uncached_vs_baseB": un / base_epoch, "cached_vs_baseB": ca / base_epoch,
                "cache_build_s": rows[True][0]["prefix_cache_s"],
                "cache_built_from": "images" if n == ns[0] else f"layer {n - 1}'s entry",
            }
    pairs = {name: [u["epoch_wall_s"] / c["epoch_wall_s"] for u, c in zip(
        [r for r in runs if r["treatment"] == name and r["n"] == 5 and not r["prefix_cache"]],
        [r for r in runs if r["treatment"] == name and r["n"] == 5 and r["prefix_cache"]])] for name in ("AnB", "BnB")}
    n5 = bench.median(table[f"{name}5"]["speedup"] for name in ("AnB", "BnB")) if 5 in ns else None
    by_run = {c: {f"{r['treatment']}{r['n']}": r for r in runs if r["prefix_cache"] == c} for c in (False, True)}
    payload = {"top1_cached_minus_uncached": bench.paired_accuracy(by_run[False], by_run[True]), "setup": {"config": f"configs/{args.config}.yaml", "precision": args.precision, "epochs": args.epochs,
                         "images_per_epoch": base["B"]["images_per_epoch"], "repeats_at_n5": args.repeats},
               "baseB_epoch_s": base_epoch, "baseA_epoch_s": base["A"]["epoch_wall_s"], "treatments": table,
               "n5_pairwise_speedups": pairs, "runs": runs,
               "cache_build_total_s": {name: sum(table[f"{name}{n}"]["cache_build_s"] for n in ns)
                                       for name in ("AnB", "BnB")}}
    summary = {}
    if n5 is not None:
        summary["cached_frozen_speedup_n5"] = {
            "value": n5, "target": ">= 10", "what": f"epoch wall time at n=5, uncached / cached ({args.precision}), "
            "median of AnB5 and BnB5, after the one-time cache build",
            "train_only": bench.median(table[f"{name}5"]["train_only_speedup"] for name in ("AnB", "BnB")),
            "cache_build_s": {name: table[f"{name}5"]["cache_build_s"] for name in ("AnB", "BnB")}}
    bench.write("frozen_treatments", payload, summary)
    print("frozen_treatments: " + ", ".join(f"{k} {v['speedup']:.1f}x" for k, v in table.items())
          + f" (epoch wall, cached vs uncached; baseB {base_epoch:.1f} s/epoch)")


if __name__ == "__main__":
    main()
