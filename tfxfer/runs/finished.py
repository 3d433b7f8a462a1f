"""A finished run opened for analysis: its record, config, architecture, normalization and network,
and the one way images go through that network — preprocessed exactly as in evaluation, in batches,
with a progress bar on a terminal. Export, probes, visualizations and diagnostics all read runs so."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from tfxfer import progress
from tfxfer.config import Config
from tfxfer.data.pipeline import Normalization, centre_crops, make_dataset, preprocess
from tfxfer.data.registry import load_dataset
from tfxfer.data.splits import task_arrays
from tfxfer.data.tasks import arch_spec, load_data
from tfxfer.errors import UserError
from tfxfer.models import LAYER_NAMES, ArchSpec, build_model, external
from tfxfer.runs.layout import CONFIG_FILE, NORMALIZATION_FILE, RESULT_FILE, WEIGHTS_FILE
from tfxfer.runs.records import read_result
from tfxfer.treatments import build_file_treatment, get_treatment


INPUT_CHUNK = 512  # images FinishedRun.inputs preprocesses at once: about 0.4 GB of float32 at 256x256


@dataclasses.dataclass
class FinishedRun:
    """A finished run read back from disk: everything export, probes and visualizations need."""

    run_dir: Path
    record: dict
    config: Config
    spec: ArchSpec
    norm: Normalization
    model: keras.Model

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def class_names(self) -> list[str]:
        return self.record["classes"]

    @property
    def from_file(self) -> bool:
        """Whether the run's base is a model file (tfxfer.models.external), not a registry network."""
        return self.config.base_model.path is not None

    @functools.cached_property
    def layer_names(self) -> tuple[str, ...]:
        """The layers analyses (probe, score) read, in network order, the classifier last: conv1..fc8
        for a registry network. For a model-file run: the base model's cuts its copied layers reach
        (cuts 1..n, every cut for baseB; a cut inside a nested model only when the outer model is
        copied whole or it is the run's own cut; a cut named like one of the run's own layers is
        left out), then the head's hidden layers and `logits`."""
        if not self.from_file:
            return LAYER_NAMES
        return (*self.cuts, *self.spec.layers[1:])

    @functools.cached_property
    def cuts(self) -> tuple[str, ...]:
        """A model-file run's cuts among `layer_names` (none for a registry network)."""
        if not self.from_file:
            return ()
        bm, n = self.config.base_model, self.record["n"]
        own = external.cut_of(bm, n)
        copied = {layer.name for layer in self.model.get_layer(external.TRUNK).layers}
        return tuple(c for c in bm.cuts[:n or len(bm.cuts)]
                     if c not in self.spec.layers and (c == own or c.partition("/")[0] in copied))

    def require_registry(self, what: str) -> None:
        """A one-line UserError when the run's base is a model file: `what` reads conv1..fc8 blocks it lacks."""
        if self.from_file:
            raise UserError(f"{what} reads the blocks conv1..fc8 of tfxfer's own networks; {self.run_id}'s base is "
                            f"the model file {Path(self.config.base_model.path).name}, whose run has the layers "
                            f"{', '.join(self.layer_names)}; supported for such runs: score, probe (without --scratch), "
                            "similarity, export, diagnose filters, visualize occlusion and invariance")

    def layer_index(self, name: str) -> int:
        """1-based position of `name` in `layer_names` (the "layer" axis of tables and figures)."""
        return self.layer_names.index(name) + 1

    def output(self, name: str):
        """The symbolic output of layer `name` (one of `layer_names`, or a block name) in the network."""
        if name in self.cuts:
            if name == external.cut_of(self.config.base_model, self.record["n"]):
                return self.model.get_layer(external.CUT).output
            # The copied layers up to that cut, called on what the network feeds its copy of the base.
            return external.cut_output(self.model, f"{external.TRUNK}/{name}")
        return self.model.output if name == "logits" else self.model.get_layer(name).output

    def inputs(self, images) -> np.ndarray:
        """uint8 images → the network's float32 input batch [N, S, S, 3]: an array [N, H, W, 3] a chunk
        at a time (one call per image took 5 ms of the 2-core CPU each), a list of images [H, W, 3]
        of any sizes one by one."""
        size = {"input_size": self.spec.input_size, "resize_size": self.spec.resize_size, "norm": self.norm}
        if isinstance(images, np.ndarray) and images.ndim == 4 and len(images):
            return np.concatenate([centre_crops(images[i:i + INPUT_CHUNK], **size).numpy()
                                   for i in range(0, len(images), INPUT_CHUNK)])
        return np.stack([preprocess(im, **size).numpy() for im in images])

    def batches(self, images: np.ndarray, batch_size: int, label: str = "images"):
        """Network inputs of uint8 images [N, H, W, 3], `batch_size` at a time, preprocessed by the
        evaluation pipeline; a fresh pass (and progress bar) per call."""
        ds = make_dataset(images, np.zeros(len(images), np.int64), input_size=self.spec.input_size,
                          resize_size=self.spec.resize_size, norm=self.norm, batch_size=batch_size, training=False)
        return progress.track((x for x, _ in ds), math.ceil(len(images) / batch_size), f"{self.run_id} {label}")

    def submodel(self, layers) -> keras.Model:
        """The network with the outputs of `layers` (block names or "logits") as its outputs."""
        return keras.Model(self.model.input, [self.output(n) for n in layers])

    def predict(self, layers, elements: tf.data.Dataset | np.ndarray, batch_size: int) -> list[np.ndarray]:
        """The outputs of `layers` (as `submodel`) for network inputs: an array, or a dataset of
        unbatched inputs (made on the fly), `batch_size` at a time; one array per layer.

        Called eagerly batch by batch: a fresh sub-model per figure would otherwise retrace a
        `model.predict` function each time."""
        net = self.submodel(layers)
        if isinstance(elements, np.ndarray):
            elements = tf.data.Dataset.from_tensor_slices(elements)
        count = int(elements.cardinality())
        batches = elements.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        parts = []
        for batch in progress.track(batches, math.ceil(count / batch_size), f"{self.run_id} {','.join(layers)}"):
            out = net(batch, training=False)
            parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
        return [np.concatenate(p) for p in zip(*parts)]

    def test_images(self, dataset: str | None = None, data_path: str | None = None,
                    max_images: int | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
        """uint8 test images and what they are: the run's own task's by default, else `dataset`'s
        (any registry name: cifar10, folder:PATH, ...); at most `max_images`, a seeded random subset."""
        if dataset is None:
            data, split, _ = load_data(self.config)
            x, _ = task_arrays(data, split, get_treatment(self.record["treatment"]).target, "test")
            name = f"{data.name} test images of {self.run_id}'s task"
        else:
            x = load_dataset(dataset, path=data_path, image_size=self.spec.resize_size).test_x
            name = f"{dataset} test images"
        if max_images is not None and max_images < len(x):
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_images, replace=False))]
        return x, f"{len(x)} {name}"


def load_run(run_dir: str | Path, float32: bool = False) -> FinishedRun:
    """A finished run's trained network, rebuilt from its recorded config and final weights.

    float32: build it in float32 whatever precision it trained in (its variables are float32
    either way), so projections and distances are measured in full precision."""
    run_dir = Path(run_dir)
    record = read_result(run_dir)
    if record is None:
        raise UserError(f"run directory {run_dir} holds no finished run ({run_dir / RESULT_FILE} is missing)")
    cfg = Config.from_dict(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
    spec = arch_spec(cfg)
    if cfg.base_model.path is not None:  # rebuilt from the model file (its sha256 checked), then the run's weights
        model = build_file_treatment(record["treatment"], record["n"], cfg.base_model, cfg.recipe,
                                     len(record["classes"]), seed=cfg.seed)
    else:
        model = build_model(spec, len(record["classes"]), dropout=cfg.recipe.dropout,
                            renorm_radius=cfg.arch.renorm_radius,
                            dtype_policy="float32" if float32 else cfg.recipe.precision,
                            name=record["run_id"].replace("+", "_ft"))
    model.load_weights(run_dir / WEIGHTS_FILE)
    norm = Normalization(**json.loads((run_dir / NORMALIZATION_FILE).read_text()))
    return FinishedRun(run_dir, record, cfg, spec, norm, model)
