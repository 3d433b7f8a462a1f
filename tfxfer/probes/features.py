"""Layer features of a finished run, batched, from its network in this process or from an export
(a SavedModel directory, TF Serving or `tfxfer serve`).

A view says how a conv layer's [H, W, C] map becomes one vector, as the export's conv reduction
does: `flatten` (all of it, as Zeiler & Fergus's classifiers on layers 1-5 see it) or `avg` (global
average pooling, [C]); fc layers are taken as they are. Features are float32.

Probes read features of the run's own network through the frozen-prefix activation cache
(`training.prefix_cache`), keyed by the weights of layers 1..n, the images and the view of them
(evaluation's centre crop): what is computed once serves every classifier, k, fold and rerun, and
layer n is built from the cached layer below it.
"""
from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from tfxfer.errors import UserError
from tfxfer.export.layout import PROVENANCE_FILE
from tfxfer.export.savedmodel import CONV_REDUCTIONS, feature_model, parse_layers
from tfxfer.models import LAYER_NAMES

VIEWS = CONV_REDUCTIONS
PROBE_LAYERS = LAYER_NAMES[:-1]  # conv1..fc7: Zeiler & Fergus's layers 1-7


def probe_layers(layers: list[str] | None, default=PROBE_LAYERS, allowed=LAYER_NAMES) -> list[str]:
    return list(default) if layers is None else parse_layers(layers, tuple(allowed))


def run_layers(run, layers: list[str] | None, classifier: bool = False) -> list[str]:
    """`layers` checked against the run's own (`FinishedRun.layer_names`: conv1..fc8, or a model
    file's cuts, head and logits), in network order; None: all of them, the classifier only if
    `classifier` (conv1..fc7 for a registry network)."""
    names = run.layer_names
    return probe_layers(layers, names if classifier else names[:-1], names)


def layer_axis(info: dict) -> tuple[str, ...]:
    """The layers of a probe's or score's run (its info's "layers"), in order, the classifier last:
    the "layer" axis of its tables and figures (conv1..fc8 in an info written before they were recorded)."""
    return tuple(info.get("layers", LAYER_NAMES))


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise UserError(f"view {view!r} unknown; allowed: {', '.join(VIEWS)}")
    return view


def reduce_map(x: np.ndarray, view: str) -> np.ndarray:
    """[N, ...] layer outputs → float32 [N, D] in `view`."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and view == "avg":
        return x.mean(axis=(1, 2))
    return x.reshape(len(x), -1)


def concatenated(batches, layers) -> dict[str, np.ndarray]:
    """{layer: [N, D]} of an iterable of {layer: [b, D]} batches."""
    parts = list(batches)
    return {name: np.concatenate([p[name] for p in parts]) for name in layers}


class ModelSource:
    """A finished run's network in this process, in float32 (mixed-precision runs are rebuilt)."""

    def __init__(self, run, view: str = "flatten"):
        from tfxfer.runs.finished import load_run

        self.view = check_view(view)
        self.run = load_run(run.run_dir, float32=True) if run.config.recipe.precision != "float32" else run
        self._forward: dict[tuple[str, ...], object] = {}

    def batches(self, images: np.ndarray, layers, batch_size: int):
        """{layer: float32 [b, D]} for consecutive batches of uint8 images, preprocessed as in evaluation."""
        layers = tuple(layers)
        if layers not in self._forward:
            model = feature_model(self.run, list(layers), self.view)
            self._forward[layers] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        for x in self.run.batches(images, batch_size, ",".join(layers)):
            yield {name: v.numpy() for name, v in self._forward[layers](x).items()}

    def features(self, images: np.ndarray, layers, batch_size: int = 256) -> dict[str, np.ndarray]:
        """{layer: float32 [N, D]} of `images`, from the activation cache (computed there if missing)."""
        from tfxfer.data.pipeline import fixed_views
        from tfxfer.training.prefix_cache import cache_dir, prefix_outputs

        run, spec = self.run, self.run.spec
        if run.from_file:  # the cache is keyed by conv1..fc8's weights: a model file's features are computed
            return concatenated(self.batches(images, layers, batch_size), layers)
        views = fixed_views(input_size=spec.input_size, resize_size=spec.resize_size)  # the centre crop
        out = {}
        for name in sorted(layers, key=LAYER_NAMES.index):
            maps, _ = prefix_outputs(run.model, LAYER_NAMES.index(name) + 1, images, views, spec=spec,
                                     norm=run.norm, root=cache_dir(run.run_dir.parent),
                                     label=run.record["run_id"], batch_size=batch_size)
            out[name] = reduce_map(maps[:, 0], self.view)
        return out


class ExportSource:
    """Features from an export through `serving.client` (a SavedModel loaded here, REST or gRPC):
    its `features_from_pixels_uint8` signature, whose conv reduction was chosen at export."""

    def __init__(self, client, view: str):
        self.client, self.view = client, check_view(view)
        export_dir = getattr(client, "path", None)  # a SavedModel here: its provenance says how it was cut
        if export_dir is not None and (export_dir / PROVENANCE_FILE).is_file():
            conv = json.loads((export_dir / PROVENANCE_FILE).read_text())["conv"]
            if conv != view:
                raise UserError(f"export {export_dir} reduces conv layers by {conv!r}, not by the view {view!r}; "
                                f"allowed: --view {conv}, or an export made with --conv {view}")

    def batches(self, images: np.ndarray, layers, batch_size: int):
        for i in range(0, len(images), batch_size):
            outputs = self.client.predict({"pixels": images[i:i + batch_size]}, "features_from_pixels_uint8")
            missing = [name for name in layers if name not in outputs]
            if missing:
                raise UserError(f"the export has no features for layers {', '.join(missing)}; it serves "
                                f"{', '.join(sorted(outputs))}")
            yield {name: np.asarray(outputs[name], np.float32) for name in layers}

    def features(self, images: np.ndarray, layers, batch_size: int = 256) -> dict[str, np.ndarray]:
        """{layer: float32 [N, D]} of `images` (not cached: a served model's weights are out of sight)."""
        return concatenated(self.batches(images, layers, batch_size), layers)


def feature_source(run, view: str, server: str | None = None, model: str | None = None,
                   version: int | None = None, export: str | None = None):
    """The run's network in this process, or an export of it (a server, or a SavedModel here)."""
    if server is None and export is None:
        return ModelSource(run, view)
    from tfxfer.serving.client import connect

    return ExportSource(connect(server, model, version, export), view)
