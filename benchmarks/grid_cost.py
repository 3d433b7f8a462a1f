"""grid_cost: what one split's transfer grid costs, optimized (mixed_bfloat16 + frozen-prefix cache,
shared across runs) against naive (float32, no cache), by treatment.

Quickstart (configs/quickstart.yaml: 2 splits x {BnB, BnB+, AnB, AnB+} x n = 1..7 + bases, synthetic
data): both grids are run in full, one after the other, with `run_grid` as `tfxfer experiment`
runs them; wall times and every run's top-1 side by side.

CIFAR-10 (configs/cifar10.yaml, one random split, the same treatments, 14 epochs): the bases are
trained in full in both modes (their accuracy is the precision check); every other kind of run is
trained for `--epochs` epochs and its 14-epoch cost computed from its measured first epoch (tracing,
cache build), steady epochs and fixed costs (setup, test). AnB and BnB at n = 1..7 are measured
in both modes; a fine-tuned run trains every layer whatever n is, so BnB+ at n = 4 stands for all
of them. Running the full CIFAR grid twice did not fit the time this was measured in.

"Naive", as the issue defines it: every network of the grid trained in full in float32 without
caching, so a frozen XnB at n costs what XnB+ at n costs. Beside it, the cost of the grid as
tfxfer ran it before caching (frozen layers skipped in the backward pass, but run forward every
epoch), which is the harder baseline.

`--config findings_bn` costs one random split of the converged recipe's grid instead (its random
control and equal-training control baseB-long included: a baseB trained for twice the epochs),
into results/grid_cost_findings_bn.json; `--base-epochs 3 --skip-naive-frozen` measure its
26-epoch bases for 3 epochs like everything else, and its frozen runs optimized only.

    python benchmarks/grid_cost.py [--epochs 3] [--skip-quickstart] [--skip-cifar]
    python benchmarks/grid_cost.py --config findings_bn --skip-quickstart --base-epochs 3 --skip-naive-frozen
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import _common as bench

MODES = {"naive": {"recipe.precision": "float32", "training.prefix_cache": False},
         "optimized": {"recipe.precision": "mixed_bfloat16", "training.prefix_cache": True}}


def quickstart(mode: str, out: Path) -> dict:
    from tfxfer.experiments import grid
    from tfxfer.experiments.planner import plan_experiment
    from tfxfer.runs.records import read_result

    cfg = bench.named_config("quickstart", {**MODES[mode], "out": str(out)})
    plan = plan_experiment(cfg)
    loaded = grid.load_all(plan)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        grid.run_grid(plan, out, loaded)
    wall = time.perf_counter() - t0
    runs = {}
    for spec in plan.runs:
        r = read_result(out / spec.run_id)
        key = f"{r['treatment']}{r['n'] or ''}@split{r['split_seed']}"
        runs[key] = {"treatment": r["treatment"], "n": r["n"], "split_seed": r["split_seed"], "wall_s": r["wall_s"],
                     "top1": r["top1"]}
    return {"wall_s": wall, "runs": runs}


def in_full(runs: dict, key: str) -> float:
    """What run `key` costs trained in full: a frozen XnY at n costs what XnY+ at n does."""
    r = runs[key]
    if r["n"] and not r["treatment"].endswith("+"):
        return runs[key.replace(r["treatment"], r["treatment"] + "+", 1)]["wall_s"]
    return r["wall_s"]


def by_treatment(runs: dict, cost) -> dict:
    out: dict[str, float] = {}
    for key, r in runs.items():
        out[r["treatment"]] = out.get(r["treatment"], 0.0) + cost(key)
    return out


def run_quickstart() -> dict:
    result = {}
    with tempfile.TemporaryDirectory(prefix="grid_cost.") as tmp:
        for mode in MODES:
            result[mode] = quickstart(mode, Path(tmp) / mode)
            bench.say(f"quickstart {mode}: {result[mode]['wall_s']:.0f} s")
    naive, opt = result["naive"]["runs"], result["optimized"]["runs"]
    naive_full = sum(in_full(naive, k) for k in naive)
    naive_recorded = sum(r["wall_s"] for r in naive.values())
    result["by_treatment_s"] = {"naive_in_full": by_treatment(naive, lambda k: in_full(naive, k)),
                                "naive_as_before": by_treatment(naive, lambda k: naive[k]["wall_s"]),
                                "optimized": by_treatment(opt, lambda k: opt[k]["wall_s"])}
    # Run records time epochs and the test; the grid's own wall time adds model building per run.
    scale = result["naive"]["wall_s"] / naive_recorded
    result["naive_in_full_wall_s"] = naive_full * scale
    result["ratio_vs_naive"] = result["optimized"]["wall_s"] / result["naive_in_full_wall_s"]
    result["ratio_vs_before"] = result["optimized"]["wall_s"] / result["naive"]["wall_s"]
    result["accuracy_optimized_minus_naive"] = bench.paired_accuracy(naive, opt)
    return result


def run_cost(r: dict, epochs: int) -> float:
    """A run's cost over `epochs` epochs from one of fewer: its first epoch, the steady ones, the rest."""
    fixed = r["wall_s"] - r["first_epoch_wall_s"] - (r["epochs"] - 1) * r["epoch_wall_s"]
    return fixed + r["first_epoch_wall_s"] + (epochs - 1) * r["epoch_wall_s"]


def run_cifar(name: str, epochs: int, base_epochs: int | None, naive_frozen: bool) -> dict:
    """One random split of configs/<name>.yaml. Bases are trained for `base_epochs` (default: in
    full, so their accuracy checks the precision) and everything else for `epochs`; each run's cost
    at its planned epochs is computed from its measured ones. Without `naive_frozen` the frozen runs
    are measured optimized only: naive, by definition, trains them in full, so a full network's
    naive cost stands for them, and the "before caching" column is not computed."""
    from tfxfer.data.tasks import load_data, task_data

    planned = bench.named_config(name)
    full_epochs, exp = planned.recipe.epochs, planned.experiment
    measured_epochs = sorted({epochs, base_epochs or full_epochs, full_epochs})
    cfgs = {mode: {e: bench.named_config(name, {**o, "recipe.epochs": e}) for e in measured_epochs}
            for mode, o in MODES.items()}
    loaded = load_data(cfgs["naive"][epochs])
    tasks = {(t, s): task_data(cfgs["naive"][epochs], *loaded, task=t, source=s)
             for t, s in (("A", None), ("B", None), ("B", "A"))}
    frozen = [t for t in exp.treatments if not t.endswith("+")]
    measured: dict[str, dict] = {mode: {} for mode in MODES}
    # The two modes alternate run by run, so that load from other jobs falls on both alike.
    kinds = [("baseA", 0, base_epochs or full_epochs), ("baseB", 0, base_epochs or full_epochs), ("BnB+", 4, epochs),
             *[(t, n, epochs) for n in range(1, 8) for t in frozen]]
    with tempfile.TemporaryDirectory(prefix="grid_cost_cifar.") as tmp:
        for treatment, n, e in kinds:
            for mode in MODES:
                if mode == "naive" and treatment in frozen and not naive_frozen:
                    continue
                out = Path(tmp) / mode
                out.mkdir(exist_ok=True)
                m = measured[mode]
                src = "A" if treatment == "AnB" else "B"
                task = tasks[("A", None) if treatment == "baseA" else ("B", "A") if treatment == "AnB" else ("B", None)]
                base = Path(m[f"base{src}"]["run_dir"]) if n and treatment != "random" else None
                key = f"{treatment}{n or ''}"
                m[key] = r = bench.train_timed(treatment, n, cfgs[mode][e], task, out, base=base)
                bench.say(f"cifar {mode:9s} {key:8s}: {r['wall_s']:6.1f} s, {r['epoch_wall_s']:5.2f} s/epoch, "
                          f"cache {r['prefix_cache_s']:5.1f} s, top1 {r['top1']:.3f}")
    costs = {}
    for mode, m in measured.items():
        c = {b: run_cost(m[b], full_epochs) for b in ("baseA", "baseB")}
        if exp.controls:
            # The equal-training control: baseB trained for its epochs plus a fine-tuned treatment's.
            c["baseB-long"] = run_cost(m["baseB"], 2 * full_epochs)
        for t in exp.treatments:
            if t.endswith("+"):
                c[t] = 7 * run_cost(m["BnB+4"], full_epochs)
            elif f"{t}1" in m:
                c[t] = sum(run_cost(m[f"{t}{n}"], full_epochs) for n in range(1, 8))
        costs[mode] = c
    full_net = run_cost(measured["naive"]["BnB+4"], full_epochs)
    naive_in_full = {**costs["naive"], **{t: 7 * full_net for t in frozen}}
    total = {mode: sum(c.values()) for mode, c in costs.items()}
    result = {"config": name, "by_treatment_s": {"naive_in_full": naive_in_full, "optimized": costs["optimized"]},
              "naive_in_full_s": sum(naive_in_full.values()), "optimized_s": total["optimized"],
              "ratio_vs_naive": total["optimized"] / sum(naive_in_full.values()),
              "base_top1": {mode: {t: measured[mode][f"base{t}"]["top1"] for t in "AB"} for mode in MODES},
              "top1_optimized_minus_naive": bench.paired_accuracy(measured["naive"], measured["optimized"]),
              "measured": measured, "measured_epochs": epochs, "base_epochs": base_epochs or full_epochs,
              "full_epochs": full_epochs}
    if naive_frozen:
        result["by_treatment_s"]["naive_as_before"] = costs["naive"]
        result.update(naive_as_before_s=total["naive"], ratio_vs_before=total["optimized"] / total["naive"])
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cifar10", help="the CIFAR-10 experiment of configs/ whose split 0 is costed")
    ap.add_argument("--epochs", type=int, default=3, help="epochs measured per CIFAR treatment run")
    ap.add_argument("--base-epochs", type=int, help="epochs measured per CIFAR base net (default: its planned ones)")
    ap.add_argument("--skip-naive-frozen", action="store_true",
                    help="measure frozen runs optimized only (naive trains them in full anyway)")
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--skip-cifar", action="store_true")
    args = ap.parse_args()
    payload, summary = {}, {}
    if not args.skip_quickstart:
        payload["quickstart"] = run_quickstart()
    if not args.skip_cifar:
        payload[args.config] = run_cifar(args.config, args.epochs, args.base_epochs, not args.skip_naive_frozen)
    headline = payload.get(args.config) or payload["quickstart"]
    # Another config's costing goes beside the committed cifar10 one, not over it.
    suffix = "" if args.config == "cifar10" else f"_{args.config}"
    summary["grid_cost_vs_naive" + suffix] = {
        "value": headline["ratio_vs_naive"], "target": "<= 0.5",
        "what": (f"one CIFAR-10 split's grid of configs/{args.config}.yaml (computed from per-treatment costs)"
                 if args.config in payload else "the quickstart grid (measured)") +
                ": mixed_bfloat16 + prefix cache / every network trained in full in float32 without caching",
        **({"vs_tfxfer_before_caching": headline["ratio_vs_before"]} if "ratio_vs_before" in headline else {}),
        **({"quickstart_measured": payload["quickstart"]["ratio_vs_naive"],
            "quickstart_vs_before": payload["quickstart"]["ratio_vs_before"],
            "quickstart_top1_optimized_minus_naive": payload["quickstart"]["accuracy_optimized_minus_naive"]}
           if "quickstart" in payload else {})}
    bench.write("grid_cost" + suffix, payload, summary)
    print("grid_cost: " + "; ".join(f"{name} {p['ratio_vs_naive']:.2f} of naive" +
                                    (f" ({p['ratio_vs_before']:.2f} of tfxfer before caching)"
                                     if "ratio_vs_before" in p else "") for name, p in payload.items()))


if __name__ == "__main__":
    main()
