"""The paper's Figures 2 and 3, drawn with matplotlib from a Grid, as PNG and SVG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: reports are made on machines without a screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfxfer.report.analysis import LABELS, Grid  # noqa: E402

STYLE = {  # the paper's colours and markers
    "base": dict(color="white", edgecolor="black", marker="o"),
    "selffer": dict(color="#1f3f99", marker="o"),
    "selffer+": dict(color="#7fa7e6", marker="o"),
    "transfer": dict(color="#a01818", marker="D"),
    "transfer+": dict(color="#f08080", marker="D"),
    "random": dict(color="#666666", marker="s"),
    "base-long": dict(color="#c8c8c8", edgecolor="black", marker="o"),
}
OFFSETS = {"base": 0.0, "selffer": -0.15, "selffer+": -0.05, "transfer": 0.05, "transfer+": 0.15, "random": 0.0,
           "base-long": 0.15}


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        tmp = p.with_name(f".{p.name}")
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=p.suffix[1:])
        tmp.replace(p)
    plt.close(fig)
    return paths


def _runs(grid: Grid, role: str, units, offset: float = 0.0) -> list[tuple[float, float]]:
    """(n, top-1) of every run of the role in the units, n shifted by offset so roles sit side by side."""
    return [(n + offset, v) for u in units for (r, n), v in grid.cells[u].items() if r == role]


def _mean_band(ax, grid: Grid, role: str, units, normalize: bool = False, band: bool = True, **line):
    est = {}
    for n in grid.ns(role, units):
        vals = [grid.value(u, role, n) - (grid.value(u, "base", 0) if normalize else 0)
                for u in units if grid.value(u, role, n) is not None and
                (not normalize or grid.value(u, "base", 0) is not None)]
        if vals:
            est[n] = vals
    if not est:
        return
    ns = sorted(est)
    means = np.array([np.mean(est[n]) for n in ns])
    ax.plot(ns, means, **line)
    if band and all(len(est[n]) > 1 for n in ns):
        from scipy import stats

        half = np.array([stats.sem(est[n]) * stats.t.ppf(0.975, len(est[n]) - 1) for n in ns])
        ax.fill_between(ns, means - half, means + half, color=line.get("color"), alpha=0.2, linewidth=0)


def _n_axis(ax, grid: Grid, label: str) -> None:
    """x: n = 0..7, or a model file's cuts 0..k named by their layers (0: baseB)."""
    ax.set_xticks(range(0, grid.n_max + 1))
    if grid.cuts:
        ax.set_xticklabels(["0"] + [f"{k}\n{grid.cuts.get(k, '')}" for k in range(1, grid.n_max + 1)], fontsize=7)
        label = "cut k of the base model file (its layer below)"
    ax.set_xlabel(label)


def figure2(grid: Grid, out: Path) -> list[Path]:
    """Top-1 against n: every run a point (left); means of top-1 − baseB with 95 % CI bands across
    splits (right: the paired differences the findings test, so splits of unequal difficulty do not
    widen the bands); none when no random split has a treatment run yet."""
    units = grid.units(exclude_kind="dissimilar")  # units with at least one treatment run
    if not units:
        return []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for role in ("base", "base-long", "selffer", "selffer+", "transfer", "transfer+"):
        pts = _runs(grid, role, units, OFFSETS[role])
        if pts:
            xs, ys = zip(*pts)
            ax1.scatter(xs, ys, s=36, linewidths=0.8, label=LABELS[role],
                        **{"edgecolor": "black", **STYLE[role]})
        if role == "base":
            ax2.axhline(0, color="black", linestyle=":", label="baseB")
        elif role == "base-long":
            # The equal-training control: a fine-tuning boost up to this line is extra training, not transfer.
            gain = grid.estimate("base-long", "base", [0], units)
            if gain is not None:
                ax2.axhline(gain.mean, color="black", linestyle="--", linewidth=1,
                            label=f"{LABELS[role]} (trained as long as a fine-tuned net; mean)")
        else:
            _mean_band(ax2, grid, role, units, normalize=True, color=STYLE[role]["color"],
                       marker=STYLE[role]["marker"], label=LABELS[role])
    for ax, title in ((ax1, "every network"), (ax2, "minus baseB: means, 95 % CI across splits")):
        _n_axis(ax, grid, "layer n at which the network is chopped and retrained")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("top-1 accuracy (test)")
    ax2.set_ylabel("top-1 − baseB's top-1")
    ax1.legend(loc="lower left", fontsize=8)
    ax2.legend(loc="lower left", fontsize=8)
    fig.suptitle("Figure 2: transfer from a base model file over its cuts" if grid.cuts else
                 "Figure 2: transfer between random A/B splits")
    return _save(fig, out, "figure2")


def figure3(grid: Grid, out: Path) -> list[Path]:
    """The dissimilar split, the random-weights control, and both normalized by their base."""
    dissimilar, similar = grid.units("dissimilar"), grid.units(exclude_kind="dissimilar")
    random_units = [u for u in grid.units() if grid.ns("random", [u])]
    if not (dissimilar or random_units):
        return []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    # One colour per direction (toward B: AnB; toward A: BnA), its base net drawn at n = 0 alike.
    colours = {"B": "#e08020", "A": "#2070b0"}
    for unit in dissimilar:
        target = unit[3]
        colour = colours[target]
        _mean_band(axes[0], grid, "transfer", [unit], color=colour, marker="h",
                   label=f"transfer toward task {target} ({'AnB' if target == 'B' else 'BnA'})")
        axes[0].scatter([0], [grid.value(unit, "base", 0)], color="white", edgecolor=colour, linewidths=1.5,
                        zorder=3, label=f"base{target}")
    axes[0].set_title("dissimilar split: AnB and BnA")
    if not random_units:
        axes[1].text(0.5, 0.5, "no random-weights runs yet", ha="center", va="center", transform=axes[1].transAxes)
    # Every run, and their mean without a band: splits' bases differ by many points, so a CI of absolute
    # accuracy says little; the paired comparison is the normalized panel's.
    pts = _runs(grid, "random", random_units)
    if pts:
        axes[1].scatter(*zip(*pts), s=20, color=STYLE["random"]["color"], alpha=0.5, label="random, each split")
    _mean_band(axes[1], grid, "random", random_units, band=False, color=STYLE["random"]["color"], marker="s",
               label="random, mean")
    base = [grid.value(u, "base", 0) for u in random_units if grid.value(u, "base", 0) is not None]
    if base:
        axes[1].axhline(np.mean(base), color="black", linestyle=":", label="baseB (mean)")
    axes[1].set_title("random frozen weights")
    _mean_band(axes[2], grid, "transfer", similar, normalize=True, color="#a01818", marker="D",
               label="AnB, random splits")
    _mean_band(axes[2], grid, "transfer", dissimilar, normalize=True, color="#e08020", marker="h",
               label="AnB/BnA, dissimilar split")
    _mean_band(axes[2], grid, "random", random_units, normalize=True, color="#666666", marker="s",
               label="random weights")
    axes[2].axhline(0, color="black", linestyle=":")
    axes[2].set_title("normalized: minus the base accuracy")
    for ax in axes:
        _n_axis(ax, grid, "layer n")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("top-1 accuracy (test)")
    fig.suptitle("Figure 3: dissimilar tasks and random weights")
    return _save(fig, out, "figure3")
