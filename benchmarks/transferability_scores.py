"""transferability_scores: wall time of `tfxfer score` — all 6 metrics on all 7 layers of one base
net for one target task, at the default image count — on real CIFAR-10, against the training time
of that split's committed grid.

RUN_DIR is a finished cifar10 base net (e.g. a findings_cifar baseA re-trained with its config).
Each repeat scores into a fresh directory beside a link to the run, so the activation cache starts
empty (cold: every layer's features computed); one more call then reuses that cache (warm). A
call's time is the whole `score()` call in this process: opening the run, loading the target's
images, features, every metric, every output written.

    python benchmarks/transferability_scores.py RUN_DIR [--repeats 3] [--grid docs/results/findings_cifar]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _common as bench


def timed_score(run_link: Path, out: Path) -> dict:
    from tfxfer.scores.score import DEFAULT_MAX_IMAGES, INFO_FILE, read_scores, score

    t = time.perf_counter()
    written = score(run_link, dataset="B", max_images=DEFAULT_MAX_IMAGES, out=out, verbose=False)
    call_s = time.perf_counter() - t
    info = json.loads(written["info"].read_text())
    rows = read_scores(written["csv"])
    metric_s: dict[str, float] = {}
    for r in rows:
        metric_s[r["metric"]] = metric_s.get(r["metric"], 0.0) + r["seconds"]
    assert (out / INFO_FILE).is_file()
    return {"call_s": call_s, "features_s": info["extract_s"], "scoring_s": info["wall_s"],
            "metric_s": metric_s, "images": info["images"], "layers": len({r["layer"] for r in rows}) - 1}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grid", type=Path, default=bench.REPO / "docs/results/findings_cifar",
                    help="the committed grid whose split's training time the scores are set against")
    args = ap.parse_args()
    run_dir = args.run_dir.resolve()
    record = json.loads((run_dir / "result.json").read_text())
    bench.named_config("findings_cifar")  # the repository root: the run's recorded data path starts there

    cold = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            root = Path(tmp) / f"cold{i}"  # the cache lives beside the run: a new root, an empty cache
            root.mkdir()
            (root / run_dir.name).symlink_to(run_dir)
            cold.append(timed_score(root / run_dir.name, root / "out"))
            bench.say(f"cold {i + 1}/{args.repeats}: {cold[-1]['call_s']:.1f} s "
                      f"(features {cold[-1]['features_s']:.1f} s)")
        warm = timed_score(Path(tmp) / "cold0" / run_dir.name, Path(tmp) / "warm")
    split = [json.loads(p.read_text()) for p in args.grid.glob("*/result.json")]
    split = [r for r in split if r["split_hash"] == record["split_hash"] and r["seed"] == record["seed"]]
    grid_s = sum(r["wall_s"] for r in split)
    call = bench.spread([c["call_s"] for c in cold])
    payload = {"run_id": record["run_id"], "target": "cifar10 task B", "images": cold[0]["images"],
               "layers": cold[0]["layers"], "cold": cold, "cold_call_s": call, "warm": warm,
               "grid": str(args.grid.relative_to(bench.REPO)) if args.grid.is_relative_to(bench.REPO) else str(args.grid),
               "grid_runs": len(split), "grid_training_s": grid_s}
    summary = {"scores_7_layers_s": {
        "value": round(call["median"], 2), "target": "<= 60",
        "what": (f"tfxfer score of {record['run_id']} (cifar8, findings_cifar split {record['split_seed']}) on "
                 f"cifar10 task B: 6 metrics x 7 layers (LEEP/NCE once, from fc8), {cold[0]['images']} images "
                 "(the default), pooled conv features, cold activation cache, whole call incl. loading the data; "
                 f"median of {len(cold)}"),
        "warm_cache_s": round(warm["call_s"], 2),
        "grid_training_s": round(grid_s, 1), "grid_runs": len(split),
        "cheaper_than_grid_x": round(grid_s / call["median"], 1)}}
    bench.write("transferability_scores", payload, summary)
    print(f"transferability_scores: {call['median']:.1f} s for 7 layers ({cold[0]['images']} images, cold cache; "
          f"warm {warm['call_s']:.1f} s), {grid_s / call['median']:.0f}x cheaper than the split's "
          f"{len(split)}-run grid ({grid_s:.0f} s)")


if __name__ == "__main__":
    main()
