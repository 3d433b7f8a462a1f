"""Probe and similarity figures (matplotlib, Agg, written atomically as PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfxfer.models import LAYER_NAMES
from tfxfer.visualize.figures import new_figure, save_figure


def _panels(summary):
    """({classifier: {layer: {k: stats}}} without the scratch rows, the scratch rows' {k: stats} or
    None, and a figure with one panel per classifier)."""
    groups: dict[str, dict[str, dict]] = {}
    for (clf, layer), by_k in summary.items():
        groups.setdefault(clf, {})[layer] = by_k
    scratch = groups.pop("scratch", {}).get("all")
    fig = new_figure(5.0 * max(1, len(groups)), 4.2)
    axes = fig.subplots(1, max(1, len(groups)), sharey=True, squeeze=False)[0]
    return groups, scratch, fig, axes


def _finish(fig, axes, info: dict, path: Path) -> Path:
    axes[0].set_ylabel("mean per-class accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"{info['run_id']} probed on {info['target']} ({info['folds']} folds)")
    return save_figure(fig, path)


def accuracy_vs_k(summary, ks: list[int], info: dict, path: Path) -> Path:
    """Fig. 9's shape: accuracy against training images per class, one line per layer, per classifier."""
    from tfxfer.probes.features import layer_axis

    axis = layer_axis(info)
    groups, scratch, fig, axes = _panels(summary)
    for ax, (clf, layers) in zip(axes, groups.items()):
        colours = iter(matplotlib_colours(len(layers)))
        for layer, by_k in layers.items():
            mean = np.array([by_k[k][0] for k in ks]) * 100
            std = np.nan_to_num(np.array([by_k[k][1] for k in ks]) * 100)
            ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, color=next(colours),
                        label=f"{axis.index(layer) + 1} {layer}")
        if scratch:
            ax.errorbar(ks, [scratch[k][0] * 100 for k in ks], yerr=np.nan_to_num([scratch[k][1] * 100 for k in ks]),
                        color="black", linestyle="--", marker="s", capsize=3, label="scratch")
        ax.axhline(100 / info["classes"], color="grey", linewidth=0.8, linestyle=":", label="chance")
        ax.set(title=f"{clf} on each layer", xlabel="training images per class (k)", xticks=ks)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, info, path)


def accuracy_vs_layer(summary, ks: list[int], info: dict, path: Path) -> Path:
    """Table 7 as a plot: accuracy against layer, one line per k, per classifier; scratch as dashed levels."""
    from tfxfer.probes.features import layer_axis

    axis = layer_axis(info)
    groups, scratch, fig, axes = _panels(summary)
    for ax, (clf, layers) in zip(axes, groups.items()):
        names = list(layers)
        xs = [axis.index(n) + 1 for n in names]
        for k, colour in zip(ks, matplotlib_colours(len(ks))):
            mean = np.array([layers[n][k][0] for n in names]) * 100
            std = np.nan_to_num(np.array([layers[n][k][1] for n in names]) * 100)
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, color=colour, label=f"k = {k}")
            if scratch:
                ax.axhline(scratch[k][0] * 100, color=colour, linestyle="--", linewidth=1,
                           label=f"scratch, k = {k}")
        ax.set(title=clf, xlabel="layer", xticks=xs, xticklabels=[f"{x}\n{n}" for x, n in zip(xs, names)])
        ax.grid(alpha=0.3)
    return _finish(fig, axes, info, path)


def matplotlib_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]


def cka_heatmap(matrix: np.ndarray, layers_x: list[str], layers_y: list[str], name_x: str, name_y: str,
                title: str, path: Path) -> Path:
    fig = new_figure(1.0 + 0.7 * len(layers_y), 0.8 + 0.6 * len(layers_x))
    ax = fig.subplots()
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    ax.set(xticks=range(len(layers_y)), xticklabels=layers_y, yticks=range(len(layers_x)), yticklabels=layers_x,
           xlabel=name_y, ylabel=name_x, title=title)
    for i in range(len(layers_x)):
        for j in range(len(layers_y)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, label="CKA")
    return save_figure(fig, path)


def cka_diagonal(curves: dict[str, dict[str, float]], title: str, path: Path, axis=LAYER_NAMES) -> Path:
    """Same-layer CKA against layer, one line per pair of networks; `axis`: every layer in order
    (conv1..fc8, or the runs' own: a model file's cuts, head and logits)."""
    axis = list(axis)
    fig = new_figure(max(6.5, 0.8 * len(axis)), 4.2)
    ax = fig.subplots()
    for (label, curve), colour in zip(curves.items(), matplotlib_colours(len(curves))):
        if curve:  # no layer in common: no line
            ax.plot([axis.index(n) + 1 for n in curve], list(curve.values()), marker="o", color=colour, label=label)
    layers = sorted({n for c in curves.values() for n in c}, key=axis.index)
    ax.set(xticks=[axis.index(n) + 1 for n in layers], xticklabels=layers, ylim=(0, 1.02),
           xlabel="layer", ylabel="CKA (same layer)", title=title)
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend(fontsize=7)
    return save_figure(fig, path)
