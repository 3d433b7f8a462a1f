"""The report's "Do cheap scores predict the grid?": per split, the rank correlation between each
transferability score of baseA's layer n on task B (`tfxfer score`, score.csv in the baseA run's
directory) and the measured top-1 of AnB(n) (and AnB+(n)), beside a ranker that knows only the
depth, with 95 % t-intervals across the random splits as the report's other CIs.

BnB(n) and random(n) are not scored against: they copy baseB's or random layers, not baseA's, so
baseA's scores make no prediction about them. LEEP and NCE read the network's fc8 softmax, one
value per network: they cannot rank the layers of one network and are listed, not correlated.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats

from tfxfer.report.analysis import Estimate

DEPTH = "depth"  # the baseline ranker: -n, "the shallower the copied prefix, the better it transfers"
MEASURED = ("AnB", "AnB+")
NS = tuple(range(1, 8))


def _score_dirs(results_dir: Path, base_id: str) -> list[Path]:
    """The baseA run's scores of task B, one folder per view: pooled features (the default) first."""
    found = sorted((results_dir / base_id / "scores").glob("*task_B-*/score.csv"),
                   key=lambda p: (not p.parent.name.endswith("-avg"), p.parent.name))
    return [p.parent for p in found]


def splits_with_scores(results_dir: Path, records: list[dict]) -> list[dict]:
    """Per split with AnB runs and per view it was scored in (one entry with scores None when it
    was not scored): its baseA record, AnB(n)/AnB+(n) top-1, the scores, the grid's training time."""
    from tfxfer.scores.score import INFO_FILE, SCORE_FILE, read_scores

    out = []
    for base in (r for r in records if r["treatment"] == "baseA"):
        same = [r for r in records if r["split_hash"] == base["split_hash"] and r["seed"] == base["seed"]]
        measured = {t: {r["n"]: r["top1"] for r in same if r["treatment"] == t} for t in MEASURED}
        if not measured["AnB"]:
            continue
        entry = {"split": base["split"], "split_seed": base["split_seed"], "base": base, "measured": measured,
                 "scores": None, "info": None, "view": None, "train_s": sum(r.get("wall_s") or 0.0 for r in same)}
        folders = _score_dirs(results_dir, base["run_id"])
        for folder in folders:
            scores: dict[str, dict[int, float]] = {}
            rows = read_scores(folder / SCORE_FILE)
            for row in rows:
                scores.setdefault(row["metric"], {})[row["layer_index"]] = row["score"]
            info = json.loads((folder / INFO_FILE).read_text()) if (folder / INFO_FILE).is_file() else {}
            out.append({**entry, "scores": scores, "info": info, "view": rows[0]["view"] if rows else None})
        if not folders:
            out.append(entry)
    # The default view (pooled) first, then any other, each split in order.
    return sorted(out, key=lambda s: (s["view"] not in (None, "avg"), str(s["view"]), s["split"] != "random",
                                      s["split_seed"] or 0))


def rank_correlations(score: dict[int, float], measured: dict[int, float]) -> tuple[float, float, int]:
    """(Kendall tau-b, Spearman rho, layers) over the n that have both; NaN where undefined (a
    constant curve, or fewer than 3 layers)."""
    ns = [n for n in NS if n in score and n in measured]
    if len(ns) < 3:
        return float("nan"), float("nan"), len(ns)
    s, m = [score[n] for n in ns], [measured[n] for n in ns]
    if len(set(s)) < 2 or len(set(m)) < 2:
        return float("nan"), float("nan"), len(ns)
    return float(stats.kendalltau(s, m).statistic), float(stats.spearmanr(s, m).statistic), len(ns)


def correlations(split: dict) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{metric or DEPTH: {measured treatment: (tau, rho, layers)}} for one split's per-layer scores."""
    rankers = {DEPTH: {n: -float(n) for n in NS}}
    rankers.update({m: curve for m, curve in (split["scores"] or {}).items() if set(curve) - {8}})
    return {name: {t: rank_correlations(curve, split["measured"][t]) for t in MEASURED if split["measured"][t]}
            for name, curve in rankers.items()}


def _f(v: float) -> str:
    return "—" if v is None or np.isnan(v) else f"{v:+.2f}"


def _ci(e: Estimate | None) -> str:
    if e is None:
        return "—"
    return f"{e.mean:+.2f}" + (f" [{e.lo:+.2f}, {e.hi:+.2f}]" if e.lo is not None else " (1 split)")


def _vs_depth(e: Estimate | None) -> str:
    if e is None or e.lo is None:
        return "one split: no CI"
    if e.lo > 0:
        return "beats depth"
    if e.hi < 0:
        return "worse than depth"
    return "not distinguishable from depth (CI includes 0)"


def summary(splits: list[dict]) -> list[dict]:
    """Per view, measured treatment and metric (depth first): tau and rho across the random splits
    and their differences to the depth ranker within each split, as Estimates (95 % t-intervals)."""
    rows = []
    for view in dict.fromkeys(s["view"] for s in splits if s["scores"] is not None):
        per = [correlations(s) for s in splits if s["view"] == view and s["split"] == "random"]
        names = [DEPTH] + sorted({m for c in per for m in c} - {DEPTH})
        for t in MEASURED:
            for name in names:
                vals = [(c[name][t], c[DEPTH][t]) for c in per if name in c and t in c[name]]
                vals = [(v, d) for v, d in vals if not np.isnan(v[0])]
                if not vals:
                    continue
                rows.append({"view": view, "metric": name, "measured": t, "splits": len(vals),
                             "tau": Estimate.of([v[0] for v, _ in vals]),
                             "rho": Estimate.of([v[1] for v, _ in vals]),
                             "tau_minus_depth": None if name == DEPTH else Estimate.of([v[0] - d[0] for v, d in vals]),
                             "rho_minus_depth": None if name == DEPTH else Estimate.of([v[1] - d[1] for v, d in vals])})
    return rows


def section(splits: list[dict], figure: Path | None) -> list[str]:
    """The markdown section; [] when no split of the grid has AnB runs."""
    if not splits:
        return []
    lines = ["", "## Do cheap scores predict the grid?", ""]
    scored = [s for s in splits if s["scores"] is not None]
    if not scored:
        return lines + ["No baseA run of this grid has scores of task B yet (`tfxfer score BASE_A_RUN_DIR`, or "
                        "`tfxfer report --scores` where the baseA weights are here)."]
    lines += [("Each transferability score of baseA's layer n (its features of task B's training images, "
               "`tfxfer score`) against the measured test top-1 of AnB(n) and AnB+(n), n = 1..7: Kendall's τ-b "
               "and Spearman's ρ over the 7 layers, per split. \"depth\" ranks the layers by −n alone (the "
               "shallower, the better), the trivial baseline: a score is credited only for τ − τ(depth), paired "
               "within each split. BnB and random(n) copy baseB's or random layers, about which baseA's scores "
               "say nothing; LEEP and NCE read the fc8 softmax, one value per network, and cannot rank layers."),
              "", "| split | base net (top-1) | scored | metric | τ vs AnB | ρ vs AnB | τ vs AnB+ | ρ vs AnB+ |",
              "|---|---|---|---|---|---|---|---|"]
    for s in scored:
        info = s["info"] or {}
        what = f"{info.get('images', '?')} images, {info.get('view', '?')}"
        name = s["split"] + (f" {s['split_seed']}" if s["split_seed"] is not None else "")
        for metric, by_t in correlations(s).items():
            cells = [_f(by_t.get(t, (np.nan, np.nan))[i]) for t in MEASURED for i in (0, 1)]
            lines.append(f"| {name} | {s['base']['run_id']} ({s['base']['top1']:.3f}) | {what} | {metric} | "
                         + " | ".join(cells) + " |")
    rows = summary(splits)
    if rows:
        units = max(r["splits"] for r in rows)
        lines += ["", f"Across the random splits ({units}): mean and 95 % t-interval.", "",
                  "| view | metric | measured | τ | ρ | τ − τ(depth) | ρ − ρ(depth) | vs depth (τ) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            verdict = "—" if r["metric"] == DEPTH else _vs_depth(r["tau_minus_depth"])
            lines.append(f"| {r['view']} | {r['metric']} | {r['measured']} | {_ci(r['tau'])} | {_ci(r['rho'])} | "
                         f"{_ci(r['tau_minus_depth'])} | {_ci(r['rho_minus_depth'])} | {verdict} |")
    first = [s for s in scored if s["view"] == scored[0]["view"]]  # LEEP/NCE do not depend on the view
    per_network = [(s, m) for s in first for m in ("leep", "nce") if m in s["scores"]]
    if per_network:
        lines += ["", "Per-network scores (fc8 softmax): " + "; ".join(
            f"{m} {s['split']} {s['split_seed'] if s['split_seed'] is not None else ''}".rstrip()
            + f" = {next(iter(s['scores'][m].values())):.4f}" for s, m in per_network) + "."]
    lines += ["", "| split | view | scoring wall time | the split's grid: training wall time (sum of wall_s) | ratio |",
              "|---|---|---|---|---|"]
    for s in scored:
        info = s["info"] or {}
        took = info.get("total_s", info.get("wall_s"))
        name = s["split"] + (f" {s['split_seed']}" if s["split_seed"] is not None else "")
        cost = "—" if took is None else f"{took:.1f} s (features {info.get('extract_s', float('nan')):.1f} s)"
        ratio = "—" if not took else f"{s['train_s'] / took:.0f}×"
        lines.append(f"| {name} | {s['view']} | {cost} | {s['train_s']:.0f} s | {ratio} |")
    if figure is not None:
        lines += ["", f"![{figure.stem}]({figure.name})"]
    return lines


def figure(splits: list[dict], path: Path) -> Path | None:
    """Per scored split: measured AnB(n) and each per-layer score, each rescaled to [0, 1], against n."""
    from tfxfer.probes.figures import matplotlib_colours
    from tfxfer.scores.figures import rescale
    from tfxfer.visualize.figures import new_figure, save_figure

    scored = [s for s in splits if s["scores"] is not None]
    scored = [s for s in scored if s["view"] == scored[0]["view"]] if scored else []  # the default view's
    if not scored:
        return None
    fig = new_figure(4.6 * len(scored), 4.0)
    axes = fig.subplots(1, len(scored), squeeze=False, sharey=True)[0]
    for ax, s in zip(axes, scored):
        ns = sorted(s["measured"]["AnB"])
        ax.plot(ns, rescale([s["measured"]["AnB"][n] for n in ns]), color="#a01818", marker="D", linewidth=2.5,
                label="AnB top-1 (measured)")
        curves = {m: c for m, c in s["scores"].items() if set(c) - {8}}
        for (metric, curve), colour in zip(sorted(curves.items()), matplotlib_colours(len(curves))):
            xs = [n for n in NS if n in curve]
            ax.plot(xs, rescale([curve[n] for n in xs]), marker="o", color=colour, linewidth=1, label=metric)
        title = s["split"] + (f" split {s['split_seed']}" if s["split_seed"] is not None else " split") + \
            f" ({s['view']})"
        ax.set(title=title, xlabel="n (layers copied from baseA)", xticks=list(NS))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("rescaled to [0, 1] over n")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)  # clear of every curve
    return save_figure(fig, path)


def compute_missing(results_dir: Path, records: list[dict], verbose: bool = False) -> list[Path]:
    """`tfxfer score` of task B for every baseA of the grid's splits that has none yet; every such
    baseA must have its weights here (checked before any is scored)."""
    from tfxfer.errors import UserError
    from tfxfer.runs.layout import WEIGHTS_FILE
    from tfxfer.scores.score import score

    todo = [s["base"]["run_id"] for s in splits_with_scores(results_dir, records) if s["scores"] is None]
    lacking = [b for b in todo if not (results_dir / b / WEIGHTS_FILE).is_file()]
    if lacking:
        raise UserError(f"scoring the grid needs the weights of {', '.join(lacking)} ({WEIGHTS_FILE} is missing in "
                        f"{results_dir}); allowed: a grid whose baseA runs have their weights, or scores "
                        "computed elsewhere with `tfxfer score` and copied into the run directories")
    return [score(results_dir / b, dataset="B", verbose=verbose)["csv"] for b in todo]
