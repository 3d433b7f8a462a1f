"""First-layer filter health (Zeiler & Fergus §4.1, Fig. 6): the evidence that moved them from
11x11/stride 4 to 7x7/stride 2 — filters that are all very low or very high frequency, few in the
middle, some dead, a few dominating.

Per conv1 filter (kernel [k, k, 3]):
- RMS: sqrt(mean(w^2)) over its k*k*3 weights — the quantity the §3 renormalization clips to a
  radius (`FilterRenorm`); `above_radius` counts filters whose RMS exceeds it.
- spectral energy shares: |2-D DFT|^2 of each input channel at the filter's own k x k frequencies,
  summed over channels, split by radial frequency r = sqrt(fx^2 + fy^2) in cycles per pixel
  (Nyquist along an axis is 1/2): low r < 1/6 (the mean colour, DC, is low), mid 1/6 <= r < 1/3,
  high r >= 1/3. The shares sum to 1; a filter's centroid is its energy-weighted mean r.
- dead: RMS below `dead_norm` x the layer's median RMS, or — when images are given — mean ReLU
  activation over them below `dead_activation` x the layer's median mean activation. Relative to
  the median, so one threshold serves every architecture and initialization scale.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError
from tfxfer.training.tensorboard import filter_grid
from tfxfer.visualize.figures import new_figure, save_figure

BANDS = ("low", "mid", "high")
BAND_EDGES = (1 / 6, 1 / 3)  # cycles per pixel
DEFAULT_RADIUS = 0.1  # Zeiler & Fergus's renormalization radius


@dataclasses.dataclass(frozen=True)
class Thresholds:
    dead_norm: float = 0.1  # x the layer's median filter RMS
    dead_activation: float = 0.01  # x the layer's median mean activation
    radius: float = DEFAULT_RADIUS

    def __post_init__(self):
        for name in ("dead_norm", "dead_activation"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise UserError(f"{name.replace('_', '-')} {value!r} is invalid; allowed: a fraction of the "
                                "layer's median in [0, 1)")


def rms(kernel: np.ndarray) -> np.ndarray:
    """[F] RMS of each filter of a [k, k, C, F] kernel."""
    return np.sqrt(np.mean(np.square(kernel, dtype=np.float64), axis=(0, 1, 2)))


def radial_frequency(k_rows: int, k_cols: int) -> np.ndarray:
    """[k_rows, k_cols] radial frequency (cycles per pixel) of each DFT bin."""
    return np.hypot(np.fft.fftfreq(k_rows)[:, None], np.fft.fftfreq(k_cols)[None, :])


def spectrum(kernel: np.ndarray) -> np.ndarray:
    """[k, k, F] power of each filter's 2-D DFT, summed over input channels."""
    return np.sum(np.abs(np.fft.fft2(kernel.astype(np.float64), axes=(0, 1))) ** 2, axis=2)


def band_shares(kernel: np.ndarray) -> np.ndarray:
    """[F, 3] share of each filter's spectral energy in the low, mid and high bands (NaN for an
    all-zero filter, which has no spectrum)."""
    power = spectrum(kernel)
    band = np.digitize(radial_frequency(*kernel.shape[:2]), BAND_EDGES)
    energy = np.stack([power[band == b].sum(axis=0) for b in range(len(BANDS))], axis=-1)
    total = energy.sum(axis=-1, keepdims=True)
    return np.divide(energy, total, out=np.full_like(energy, np.nan), where=total > 0)


def centroid(kernel: np.ndarray) -> np.ndarray:
    """[F] energy-weighted mean radial frequency of each filter (NaN for an all-zero filter)."""
    power = spectrum(kernel)
    total = power.sum(axis=(0, 1))
    weighted = np.tensordot(radial_frequency(*kernel.shape[:2]), power, axes=([0, 1], [0, 1]))
    return np.divide(weighted, total, out=np.full_like(total, np.nan), where=total > 0)


@dataclasses.dataclass
class FilterHealth:
    run_id: str
    arch: str
    kernel: np.ndarray  # [k, k, 3, F]
    thresholds: Thresholds
    rms: np.ndarray  # [F]
    shares: np.ndarray  # [F, 3] low, mid, high
    centroid: np.ndarray  # [F]
    dead_by_norm: np.ndarray  # [F] bool
    mean_activation: np.ndarray | None = None  # [F] over `images`, when measured
    dead_by_activation: np.ndarray | None = None
    images: str | None = None  # what the activations were measured on
    # Pearson correlation of the kernel with the one it was initialized as (base nets: rebuilt from
    # their seed); near 1, the layer has hardly trained, and its spectrum says little.
    init_correlation: float | None = None
    layer: str = "conv1"  # the layer diagnosed (a model-file run's: its base model's first RGB Conv2D)

    @property
    def dead(self) -> np.ndarray:
        return self.dead_by_norm | (self.dead_by_activation if self.dead_by_activation is not None else False)

    @property
    def above_radius(self) -> np.ndarray:
        return self.rms > self.thresholds.radius

    @property
    def dominant(self) -> np.ndarray:
        """[F] index of each filter's strongest band (-1 for a filter without a spectrum)."""
        return np.where(np.isnan(self.shares).any(axis=1), -1, np.nan_to_num(self.shares).argmax(axis=1))

    def order(self) -> np.ndarray:
        """Filters from lowest to highest frequency (by centroid), dead ones last."""
        return np.lexsort((np.nan_to_num(self.centroid, nan=np.inf), self.dead))

    def summary(self) -> dict:
        live = ~self.dead
        dominant = self.dominant[live]
        k = self.kernel.shape[0]
        return {
            "run_id": self.run_id, "arch": self.arch, "filters": self.kernel.shape[-1], "kernel": f"{k}x{k}",
            "dead": int(self.dead.sum()), "dead_by_norm": int(self.dead_by_norm.sum()),
            "dead_by_activation": "" if self.dead_by_activation is None else int(self.dead_by_activation.sum()),
            **{f"dominant_{b}": int((dominant == i).sum()) for i, b in enumerate(BANDS)},
            **{f"mean_{b}_share": _mean(self.shares[live, i]) for i, b in enumerate(BANDS)},
            "above_radius": int(self.above_radius.sum()), "radius": self.thresholds.radius,
            "activation_images": self.images or "",
            "init_correlation": "" if self.init_correlation is None else round(self.init_correlation, 4),
        }

    def summary_line(self) -> str:
        s = self.summary()
        how = f"RMS < {self.thresholds.dead_norm:g} x median: {s['dead_by_norm']}"
        if self.dead_by_activation is not None:
            how += f"; mean activation < {self.thresholds.dead_activation:g} x median over {self.images}: " \
                   f"{s['dead_by_activation']}"
        return (f"{s['run_id']} ({s['arch']} {self.layer}, {s['filters']} filters {s['kernel']}): dead {s['dead']} ({how}); "
                f"live filters by dominant band low/mid/high {s['dominant_low']}/{s['dominant_mid']}/"
                f"{s['dominant_high']}, mean mid-frequency share {s['mean_mid_share']:.3f}; "
                f"RMS above radius {s['radius']:g}: {s['above_radius']}"
                + ("" if self.init_correlation is None else f"; correlation with its initialization "
                                                            f"{self.init_correlation:.3f}"))

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["run_id", "filter", "frequency_rank", "rms", *[f"{b}_share" for b in BANDS], "centroid",
                         "mean_activation", "dead", "above_radius"])
        rank = np.empty(len(self.rms), int)
        rank[self.order()] = np.arange(len(self.rms))
        for f in range(len(self.rms)):
            act = "" if self.mean_activation is None else f"{self.mean_activation[f]:.6g}"
            writer.writerow([self.run_id, f, rank[f], f"{self.rms[f]:.6g}", *[f"{v:.6g}" for v in self.shares[f]],
                             f"{self.centroid[f]:.6g}", act, int(self.dead[f]), int(self.above_radius[f])])
        return buf.getvalue()


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _below(values: np.ndarray, fraction: float) -> np.ndarray:
    return values < fraction * np.median(values)


def analyze_kernel(kernel: np.ndarray, run_id: str = "", arch: str = "", thresholds: Thresholds = Thresholds(),
                   mean_activation: np.ndarray | None = None, images: str | None = None) -> FilterHealth:
    """The health of one conv1 kernel [k, k, C, F]; `mean_activation` [F] adds the activation test."""
    r = rms(kernel)
    return FilterHealth(
        run_id, arch, kernel, thresholds, r, band_shares(kernel), centroid(kernel), _below(r, thresholds.dead_norm),
        mean_activation, None if mean_activation is None else _below(mean_activation, thresholds.dead_activation),
        images)


def mean_activations(model, batches) -> np.ndarray:
    """[F] mean ReLU output of each conv1 filter over batches of network inputs (before pooling)."""
    block = model.get_layer("conv1")

    def maps():
        for x in batches:
            a = block.conv(block.pad(x) if block.pad is not None else x)
            if block.bn is not None:  # the ReLU comes after the batch norm
                a = block.relu(block.bn(a, training=False))
            yield a
    return channel_means(maps())


def channel_means(maps) -> np.ndarray:
    """[F] mean of each channel over an iterable of [b, H, W, F] maps."""
    total, count = 0.0, 0
    for a in maps:
        total = total + np.asarray(a, np.float64).sum(axis=(0, 1, 2))
        count += int(np.prod(a.shape[:3]))
    return total / count


def run_health(run, thresholds: Thresholds | None = None, max_images: int | None = 1000, seed: int = 0,
               batch_size: int = 256) -> FilterHealth:
    """A finished run's conv1 health; with `max_images` (not None) also the activation test over at
    most that many of its own task's test images (a seeded subset)."""
    radius = run.config.arch.renorm_radius or DEFAULT_RADIUS
    thresholds = dataclasses.replace(thresholds or Thresholds(), radius=radius)
    if run.from_file:
        layer, conv = first_conv(run)
        kernel = np.asarray(conv.kernel)
    else:
        layer, kernel = "conv1", run.model.get_layer("conv1").get_weights()[0]
    activation, source = None, None
    if max_images is not None:
        images, source = run.test_images(max_images=max_images, seed=seed)
        batches = run.batches(images, batch_size, f"{layer} activations")
        activation = (file_mean_activations(run, layer, batches) if run.from_file
                      else mean_activations(run.model, batches))
    arch = run.record["arch"] if run.from_file else \
        run.config.arch.name + (f" {run.config.arch.variant}" if run.config.arch.variant else "")
    health = analyze_kernel(kernel, run.record["run_id"], arch, thresholds, activation, source)
    return dataclasses.replace(health, init_correlation=None if run.from_file else init_correlation(run),
                               layer=layer)


def first_conv(run):
    """(name, layer) of the first Conv2D on the RGB input (kernel [k, k, 3, F]) among a model-file
    run's copied layers (outer/inner inside a nested model); a UserError naming why when there is none."""
    import keras

    from tfxfer.models import external

    trunk = run.model.get_layer(external.TRUNK)
    for point in external.cut_points(trunk):
        layer = trunk
        for part in point.name.split("/"):
            layer = layer.get_layer(part)
        # Conv2D exactly: depthwise and separable convolutions have no [k, k, 3, F] filters to read.
        if type(layer) is keras.layers.Conv2D and layer.kernel.shape[2] == 3:
            return point.name, layer
    raise UserError(f"diagnose filters reads the filters of a Conv2D on the RGB input (kernel [k, k, 3, F]); "
                    f"{run.run_id}'s copied layers of {run.record['arch']} have none")


def file_mean_activations(run, layer: str, batches) -> np.ndarray:
    """[F] mean ReLU of each filter's output (the Conv2D's own output, with its activation; batch
    norm after it, if any, not applied) over batches of network inputs, for a model-file run."""
    import keras

    from tfxfer.models import external

    model = keras.Model(run.model.input, external.cut_output(run.model, f"{external.TRUNK}/{layer}"))
    return channel_means(np.maximum(model(x, training=False), 0.0) for x in batches)


def init_correlation(run) -> float | None:
    """conv1's correlation with its initial kernel, for a base net (rebuilt from its seed, as
    training built it); None for runs whose conv1 was copied or drawn otherwise."""
    from tfxfer.models import build_model
    from tfxfer.treatments import get_treatment

    if not get_treatment(run.record["treatment"]).is_base:
        return None
    initial = build_model(run.spec, len(run.class_names), seed=run.config.seed).get_layer("conv1").get_weights()[0]
    trained = run.model.get_layer("conv1").get_weights()[0]
    return float(np.corrcoef(initial.ravel().astype(np.float64), trained.ravel().astype(np.float64))[0, 1])


def health_figure(health: FilterHealth, path: str | Path) -> Path:
    """The filters sorted from low to high frequency (dead ones last, marked), and each one's
    band shares as a stacked bar in the same order."""
    order = health.order()
    fig = new_figure(12, 5)
    fig.suptitle(f"{health.run_id}: {health.layer} filters sorted by spectral centroid (dead last)", fontsize=10)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
    left.imshow(filter_grid(health.kernel[..., order])[0], interpolation="nearest")
    left.set_axis_off()
    left.set_title(f"{health.summary()['dead']} dead of {len(order)}", fontsize=9)
    bottom = np.zeros(len(order))
    shares = np.nan_to_num(health.shares[order])
    for i, (band, colour) in enumerate(zip(BANDS, ("#3b6fb6", "#6ab04c", "#d1495b"))):
        right.bar(np.arange(len(order)), shares[:, i], bottom=bottom, color=colour, width=1.0, label=band)
        bottom += shares[:, i]
    dead = np.flatnonzero(health.dead[order])
    if len(dead):
        right.axvspan(dead[0] - 0.5, len(order) - 0.5, color="0.85", zorder=0, label="dead")
    right.set(xlim=(-0.5, len(order) - 0.5), ylim=(0, 1), xlabel="filter (low to high frequency)",
              ylabel="share of spectral energy")
    right.set_title("low r < 1/6, mid 1/6 <= r < 1/3, high r >= 1/3 cycles/pixel", fontsize=9)
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path)


def write_health(health: FilterHealth, out: Path) -> dict[str, Path]:
    """<out>/filters.csv (one row per filter) and <out>/filters_by_frequency.png."""
    atomic_write_text(out / "filters.csv", health.csv_text())
    return {"csv": out / "filters.csv", "png": health_figure(health, out / "filters_by_frequency.png")}


def summary_csv(healths: list[FilterHealth]) -> str:
    rows = [h.summary() for h in healths]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def diagnose_filters(run_dirs, out: str | Path | None = None, thresholds: Thresholds | None = None,
                     max_images: int | None = 1000, seed: int = 0, batch_size: int = 256) -> list[FilterHealth]:
    """`tfxfer diagnose filters`: per run, filters.csv and filters_by_frequency.png in <out>/<run_id>
    (default <run>/diagnose); with `out`, also <out>/filters_summary.csv, one row per run."""
    from tfxfer.runs.finished import load_run
    from tfxfer.visualize.inputs import check_positive

    check_positive(batch_size=batch_size, **({"max_images": max_images} if max_images is not None else {}))
    runs = [load_run(d, float32=True) for d in run_dirs]  # every bad directory fails before anything is written
    for run in runs:
        if run.from_file:
            first_conv(run)
    healths = []
    for run in runs:
        health = run_health(run, thresholds, max_images, seed, batch_size)
        write_health(health, Path(out) / run.record["run_id"] if out is not None else run.run_dir / "diagnose")
        healths.append(health)
    if out is not None:
        atomic_write_text(Path(out) / "filters_summary.csv", summary_csv(healths))
    return healths


HEALTH_FILE = "conv1_health.json"  # a base run's conv1 summary, kept beside its record


def base_health(results_dir: str | Path, records: list[dict]) -> list[dict]:
    """conv1 health (FilterHealth.summary() and the dead-norm threshold) of every base net among
    `records`: measured from its weights by the norm test only (a report loads no images) and kept
    in its run directory as conv1_health.json, so that a report over records whose weights are not
    there (committed results) still shows it. A model file's baseB has no conv1: not measured."""
    import json

    from tfxfer.runs.finished import load_run
    from tfxfer.runs.layout import WEIGHTS_FILE
    from tfxfer.treatments import get_treatment

    dirs = [Path(results_dir) / r["run_id"] for r in records
            if get_treatment(r["treatment"]).is_base and not r.get("base_model_sha256")]
    summaries = []
    for d in dirs:
        path = d / HEALTH_FILE
        if not path.is_file() and (d / WEIGHTS_FILE).is_file():
            health = run_health(load_run(d, float32=True), max_images=None)
            summary = {**health.summary(), "dead_norm": health.thresholds.dead_norm}
            atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        if path.is_file():
            summaries.append(json.loads(path.read_text()))
    return summaries
