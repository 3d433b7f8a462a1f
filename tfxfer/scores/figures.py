"""Score figures (matplotlib, Agg, written atomically as PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfxfer.probes.figures import matplotlib_colours
from tfxfer.visualize.figures import new_figure, save_figure


def rescale(values) -> np.ndarray:
    """Min-max to [0, 1], so curves of different units share an axis; a constant curve sits at 0.5."""
    v = np.asarray(values, float)
    span = np.nanmax(v) - np.nanmin(v)
    return np.full_like(v, 0.5) if span == 0 else (v - np.nanmin(v)) / span


def score_vs_layer(rows: list[dict], info: dict, probe: tuple[str, dict[str, float]] | None, path: Path) -> Path:
    """Each per-layer metric, rescaled to [0, 1], against layer; the probe's accuracy beside it."""
    from tfxfer.probes.features import layer_axis

    axis = layer_axis(info)
    per_layer: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["layer"] != axis[-1]:  # LEEP/NCE: one value for the network, no curve over layers
            per_layer.setdefault(r["metric"], {})[r["layer"]] = r["score"]
    fig = new_figure(6.0 * (2 if probe else 1), 4.2)
    axes = fig.subplots(1, 2 if probe else 1, squeeze=False)[0]
    for (metric, curve), colour in zip(per_layer.items(), matplotlib_colours(len(per_layer))):
        names = sorted(curve, key=axis.index)
        axes[0].plot([axis.index(n) + 1 for n in names], rescale([curve[n] for n in names]), marker="o",
                     color=colour, label=metric)
    axes[0].set(xlabel="layer", ylabel="score, rescaled to [0, 1] over layers", title="transferability scores")
    if probe:
        label, acc = probe
        names = sorted(acc, key=axis.index)
        axes[1].plot([axis.index(n) + 1 for n in names], [100 * acc[n] for n in names], marker="s",
                     color="black", label=label)
        axes[1].set(xlabel="layer", ylabel="mean per-class accuracy (%)", title="linear probe")
    for ax in axes:
        ax.set_xticks(range(1, len(axis)), [f"{i}\n{n}" for i, n in enumerate(axis[:-1], 1)])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{info['run_id']} on {info['target']} ({info['images']} images, {info['view']})")
    return save_figure(fig, path)
