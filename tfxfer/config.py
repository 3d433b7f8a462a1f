"""Configuration is data: YAML files in configs/, validated on load, round-tripping through dicts.

A config has the sections below; every key has a default, so a YAML file names only what it
changes. Unknown keys and bad values raise `UserError` naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path

import yaml

from tfxfer.errors import UserError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
SPLIT_KINDS = ("random", "dissimilar", "explicit")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine", "linear")
# How images become network inputs: tfxfer's per-channel standardization of the dataset, Keras
# Applications' preprocess_input modes, or 0..255 pixels (models that rescale inside).
PREPROCESSING = ("standardize", "caffe", "tf", "torch", "raw")


@dataclasses.dataclass
class DatasetConfig:
    name: str = "synthetic"  # synthetic | cifar10 | cifar100 | tfds:NAME | folder:PATH
    path: str | None = None  # a local copy (class folders or the python-format archive)
    data_dir: str | None = None  # TFDS data_dir
    test_fraction: float = 0.2  # held out of a folder that has no test/ subfolder
    val_fraction: float = 0.1  # carved from the training images for choosing (never the test images)
    train_per_class: int | None = None  # cap (synthetic: how many to generate)
    test_per_class: int | None = None
    seed: int = 0  # drives synthetic images and the held-out test fraction

    def validate(self, at):
        _check(0 < self.test_fraction < 1, at, "test_fraction", self.test_fraction, "a fraction in (0, 1)")
        _check(0 <= self.val_fraction < 1, at, "val_fraction", self.val_fraction, "a fraction in [0, 1)")
        for key in ("train_per_class", "test_per_class"):
            v = getattr(self, key)
            _check(v is None or v > 0, at, key, v, "a positive integer or null")


@dataclasses.dataclass
class SplitConfig:
    kind: str = "random"
    seed: int = 0
    A: list[str] | str | None = None  # class names or a family name (dissimilar, explicit)
    B: list[str] | str | None = None  # omitted: all classes not in A

    def validate(self, at):
        _check(self.kind in SPLIT_KINDS, at, "kind", self.kind, ", ".join(SPLIT_KINDS))
        if self.kind != "random":
            _check(self.A is not None, at, "A", self.A, f"a class list or family name (split kind {self.kind})")


@dataclasses.dataclass
class ArchConfig:
    name: str = "cifar8"
    width: float = 1.0  # multiplies every layer's channel/unit count
    renorm_radius: float | None = None  # Zeiler & Fergus filter renormalization (0.1 in the paper)
    variant: str | None = None  # a Table 3 ablation (tfxfer.models.VARIANTS); null: the arch as registered

    def validate(self, at):
        from tfxfer.models.registry import VARIANTS, list_archs

        archs = list_archs()
        _check(self.name in archs, at, "name", self.name, "one of " + ", ".join(archs))
        _check(self.width > 0, at, "width", self.width, "a number > 0")
        _check(self.renorm_radius is None or self.renorm_radius > 0, at, "renorm_radius", self.renorm_radius,
               "a number > 0 or null")
        _check(self.variant is None or self.variant in VARIANTS, at, "variant", self.variant,
               "null or one of " + ", ".join(VARIANTS))


@dataclasses.dataclass
class BaseModelConfig:
    """A network of the user's own as the base (tfxfer.models.external), in place of a base run:
    a Keras model file cut at named layers; treatments AnB, AnB+ and random copy it up to cut n."""

    path: str | None = None  # a .keras file, or a .weights.h5 with `application`; null: no such base
    sha256: str | None = None  # the file's; filled in when the config is resolved, checked when given
    application: str | None = None  # the keras.applications architecture of a .weights.h5, e.g. MobileNetV2
    application_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {alpha: 0.35, include_top: false}
    input_size: int | None = None  # the square input's side; null: the model's own
    cuts: list[str] | str | None = None  # layer names (nested: outer/inner), or "auto": the stage outputs
    preprocessing: str = "standardize"  # one of PREPROCESSING
    head: list[int] = dataclasses.field(default_factory=list)  # hidden ReLU units of the new head; []: linear

    def validate(self, at):
        _check(self.preprocessing in PREPROCESSING, at, "preprocessing", self.preprocessing, ", ".join(PREPROCESSING))
        _check(self.input_size is None or self.input_size > 0, at, "input_size", self.input_size,
               "a positive integer or null")
        from tfxfer.models.external import MAX_HEAD

        _check(all(u > 0 for u in self.head) and len(self.head) <= MAX_HEAD, at, "head", self.head,
               f"a list of at most {MAX_HEAD} positive integers")
        _check(self.cuts is None or self.cuts == "auto" or isinstance(self.cuts, list) and len(self.cuts) > 0, at,
               "cuts", self.cuts, "a non-empty list of layer names, auto, or null")
        _check(self.application is None or self.path is not None, at, "application", self.application,
               "null unless base_model.path is set")


@dataclasses.dataclass
class AugmentConfig:
    crop: bool = True  # random crop of input_size from the resized (and padded) image
    pad: int = 4  # zero padding before the random crop (for small images)
    flip: bool = True  # random horizontal flip

    def validate(self, at):
        _check(self.pad >= 0, at, "pad", self.pad, "an integer >= 0")


@dataclasses.dataclass
class RecipeConfig:
    """The paper's Caffe recipe by default: SGD, momentum 0.9, lr 0.01, wd 5e-4, ×0.1 steps, dropout 0.5."""

    optimizer: str = "sgd"
    lr: float = 0.01  # the peak learning rate of the cosine and linear schedules
    momentum: float = 0.9
    nesterov: bool = False  # Nesterov momentum (SGD)
    # step: ×lr_decay steps; cosine / linear: from lr down to 0 over training, after a linear
    # warm-up from 0 over warmup_epochs (linear after a warm-up is the one-cycle schedule).
    schedule: str = "step"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    weight_decay: float = 5e-4
    lr_decay: float = 0.1  # multiply the learning rate by this ...
    lr_step_epochs: int | None = None  # ... every this many epochs (null: at 50 % and 75 % of training)
    batch_size: int = 128  # global, over all replicas
    epochs: int = 30
    dropout: float = 0.5
    precision: str = "float32"
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    early_stopping_patience: int | None = None  # epochs without a better validation top-1

    def validate(self, at):
        _check(self.optimizer in OPTIMIZERS, at, "optimizer", self.optimizer, ", ".join(OPTIMIZERS))
        _check(self.lr > 0, at, "lr", self.lr, "a number > 0")
        _check(0 <= self.momentum < 1, at, "momentum", self.momentum, "a number in [0, 1)")
        _check(self.schedule in SCHEDULES, at, "schedule", self.schedule, ", ".join(SCHEDULES))
        _check(0 <= self.warmup_epochs < self.epochs, at, "warmup_epochs", self.warmup_epochs,
               f"a number of epochs in [0, epochs = {self.epochs})")
        _check(0 <= self.label_smoothing < 1, at, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        _check(self.weight_decay >= 0, at, "weight_decay", self.weight_decay, "a number >= 0")
        _check(0 < self.lr_decay <= 1, at, "lr_decay", self.lr_decay, "a number in (0, 1]")
        _check(self.lr_step_epochs is None or self.lr_step_epochs > 0, at, "lr_step_epochs", self.lr_step_epochs,
               "a positive integer or null")
        _check(self.batch_size > 0, at, "batch_size", self.batch_size, "a positive integer")
        _check(self.epochs > 0, at, "epochs", self.epochs, "a positive integer")
        _check(0 <= self.dropout < 1, at, "dropout", self.dropout, "a number in [0, 1)")
        _check(self.precision in PRECISIONS, at, "precision", self.precision, ", ".join(PRECISIONS))
        _check(self.early_stopping_patience is None or self.early_stopping_patience > 0, at,
               "early_stopping_patience", self.early_stopping_patience, "a positive integer or null")


@dataclasses.dataclass
class TrainingConfig:
    strategy: str = "auto"  # auto: mirrored over the visible GPUs, else default; multiworker: from TF_CONFIG
    devices: list[str] | None = None  # for mirrored, e.g. ["/gpu:0", "/gpu:1"]
    # Frozen treatments train layers n+1..8 on cached outputs of layers 1..n (fixed crops/flips
    # stand in for random ones); false: every epoch runs the whole network, as for fine-tuning.
    prefix_cache: bool = True
    # Disk the cache may take (one CIFAR-10 base's entries for n = 1..7 take about 12 GB); least
    # recently used entries beyond it are deleted. null: no limit.
    prefix_cache_gb: float | None = 16.0

    def validate(self, at):
        _check(self.strategy in STRATEGIES, at, "strategy", self.strategy, ", ".join(STRATEGIES))
        _check(self.prefix_cache_gb is None or self.prefix_cache_gb >= 0, at, "prefix_cache_gb",
               self.prefix_cache_gb, "a number of gigabytes >= 0, or null for no limit")


@dataclasses.dataclass
class ExperimentConfig:
    """A grid (`tfxfer experiment`): every split × treatment × n, base nets planned automatically."""

    # Each like the split section, optionally with its own `treatments` and `n` (e.g. the dissimilar
    # split with just AnB and BnA); null: just the split section.
    splits: list[dict] | None = None
    treatments: list[str] = dataclasses.field(default_factory=lambda: ["BnB", "BnB+", "AnB", "AnB+"])
    n: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    # Table 3 ablations: each variant (and the arch as registered, for reference) trained from
    # scratch as baseB, once per seed, besides the grid above (set treatments: [] for only these).
    variants: list[str] | None = None
    seeds: list[int] | None = None  # every run of the experiment once per seed; null: the top-level seed
    # Fine-tuned treatments (AnB+, BnB+, ...) whose equal-training control to plan: their target's
    # base net trained for the base's epochs plus the treatment's (baseB-long), one per split.
    controls: list[str] = dataclasses.field(default_factory=list)

    def grid(self, entry: dict) -> tuple[dict, list[str], list[int]]:
        """A splits entry as (its split section, its treatments, its n values)."""
        split = {k: v for k, v in entry.items() if k not in ("treatments", "n")}
        return split, entry.get("treatments", self.treatments), entry.get("n", self.n)

    def validate(self, at):
        from tfxfer.models.registry import VARIANTS
        from tfxfer.treatments import N_MAX, TREATMENTS, control_of

        grids = [(at, self.treatments, self.n)]
        for i, entry in enumerate(self.splits or []):
            where = f"{at}splits[{i}]."
            if not isinstance(entry, dict):
                raise UserError(f"config section {where.rstrip('.')} must be a mapping, got {entry!r}")
            split, treatments, ns = self.grid(entry)
            _from_dict(SplitConfig, split, where)
            grids.append((where, treatments, ns))
        for where, treatments, ns in grids:
            _check(isinstance(treatments, list), where, "treatments", treatments, "a list of treatment names")
            _check(isinstance(ns, list), where, "n", ns, f"a list of integers in 1..{N_MAX}")
            for t in treatments:
                _check(t in TREATMENTS, where, "treatments", t, ", ".join(TREATMENTS))
            for n in ns:
                _check(isinstance(n, int) and 1 <= n <= N_MAX, where, "n", n, f"integers in 1..{N_MAX}")
        for t in self.controls:
            _check(t in TREATMENTS, at, "controls", t, ", ".join(TREATMENTS))
            control_of(t)
        for v in self.variants or []:
            _check(v in VARIANTS, at, "variants", v, "names of arch variants: " + ", ".join(VARIANTS))
        _check(self.seeds is None or len(self.seeds) > 0, at, "seeds", self.seeds, "a non-empty list of integers or null")


# Recipe keys a search may vary, and how keras-tuner searches them.
TUNABLE = ("optimizer", "lr", "momentum", "weight_decay", "lr_decay", "lr_step_epochs", "batch_size", "epochs",
           "dropout", "schedule", "warmup_epochs", "label_smoothing")
TUNERS = ("random", "bayesian", "hyperband")


@dataclasses.dataclass
class SearchRange:
    """One recipe key's range: a list of `values`, or `min`..`max` (`log`: log-uniform; `step`: a grid)."""

    values: list | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False

    def validate(self, at):
        name = at.rstrip(".").rsplit(".", 1)[-1]
        tp = tunable_type(name)
        if self.values is not None:
            _check(self.min is None and self.max is None, at, "values", self.values, "either values or min/max, not both")
            _check(len(self.values) > 0, at, "values", self.values, "a non-empty list (the range is empty)")
            candidates = self.values
        else:
            _check(tp is not str, at, "min", self.min, f"values (a list): {name} is not a number")
            _check(self.min is not None and self.max is not None, at, "min", self.min, "min and max, or values")
            _check(self.min <= self.max, at, "min", self.min, f"a number <= max ({self.max})")
            _check(self.min < self.max, at, "max", self.max, f"a number > min ({self.min}); the range is empty")
            _check(not self.log or self.min > 0, at, "min", self.min, "a number > 0 for a log range")
            _check(self.step is None or self.step > 0, at, "step", self.step, "a number > 0 or null")
            candidates = [self.min, self.max]
        for value in candidates:  # every candidate must be a value the recipe itself accepts
            if tp is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            try:
                _from_dict(RecipeConfig, {name: value}, "")
            except UserError as e:
                raise UserError(f"config key {at.rstrip('.')}: {value!r} is not a valid recipe.{name} "
                                f"({str(e).split('; ', 1)[-1]})") from None


def tunable_type(name: str) -> type:
    """int, float or str: the type of a tunable recipe key's values."""
    hint = typing.get_type_hints(RecipeConfig)[name]
    return next(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))


@dataclasses.dataclass
class TuningConfig:
    """`tfxfer tune`: which recipe keys to search, with which keras-tuner algorithm."""

    space: dict = dataclasses.field(default_factory=lambda: {
        "lr": {"min": 1e-3, "max": 1e-1, "log": True},
        "weight_decay": {"min": 1e-5, "max": 1e-3, "log": True},
        "batch_size": {"values": [64, 128, 256]},
        "dropout": {"min": 0.0, "max": 0.6, "step": 0.1},
    })
    tuner: str = "random"
    max_trials: int = 10
    seed: int = 1  # the oracle's; keras-tuner treats 0 as "no seed"
    worker_timeout_s: float = 600.0  # a worker silent this long is presumed dead; its trial is run again

    def validate(self, at):
        _check(self.tuner in TUNERS, at, "tuner", self.tuner, ", ".join(TUNERS))
        _check(self.max_trials > 0, at, "max_trials", self.max_trials, "a positive integer")
        _check(self.seed > 0, at, "seed", self.seed, "a positive integer")
        _check(self.worker_timeout_s > 0, at, "worker_timeout_s", self.worker_timeout_s, "a number > 0")
        _check(len(self.space) > 0, at, "space", self.space, "at least one recipe key to search")
        self.ranges()

    def ranges(self) -> dict[str, SearchRange]:
        for name in self.space:
            _check(name in TUNABLE, "tuning.space.", name, name, "one of " + ", ".join(TUNABLE))
        return {name: _from_dict(SearchRange, spec, f"tuning.space.{name}.") for name, spec in self.space.items()}


@dataclasses.dataclass
class Config:
    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    arch: ArchConfig = dataclasses.field(default_factory=ArchConfig)
    base_model: BaseModelConfig = dataclasses.field(default_factory=BaseModelConfig)
    recipe: RecipeConfig = dataclasses.field(default_factory=RecipeConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    tuning: TuningConfig = dataclasses.field(default_factory=TuningConfig)
    experiment: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    seed: int = 0  # initialization, data order, augmentation, dropout
    out: str = "runs"  # where run directories go

    def validate(self, at):
        pass

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        return _from_dict(cls, data, "")


def _check(ok: bool, at: str, key: str, value, allowed: str):
    if not ok:
        raise UserError(f"config key {at}{key}: {value!r} is not allowed; expected {allowed}")


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _from_dict(cls, data, at: str):
    if not isinstance(data, dict):
        raise UserError(f"config section {at.rstrip('.') or '(top level)'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise UserError(f"config key {at}{unknown[0]} does not exist; allowed keys in "
                        f"{at.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value if value is not None else {}, f"{at}{name}.")
        elif not _type_ok(value, tp):
            raise UserError(f"config key {at}{name}: {value!r} is not allowed; expected {_type_name(tp)}")
        else:
            kwargs[name] = float(value) if tp is float else value
    obj = cls(**kwargs)
    obj.validate(at)
    return obj


def config_dirs() -> list[Path]:
    """Where named configs live: the checkout's configs/, then the installed share/tfxfer/configs."""
    return [Path(__file__).resolve().parent.parent / "configs", Path(sys.prefix) / "share" / "tfxfer" / "configs"]


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if os.sep not in name_or_path and not path.suffix:
        for d in config_dirs():
            if (d / f"{name_or_path}.yaml").is_file():
                return d / f"{name_or_path}.yaml"
    raise UserError(f"config {name_or_path!r} not found; give a YAML file or one of: {', '.join(list_configs())}")


def list_configs() -> list[str]:
    return sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def load_config(name_or_path: str | None = "quickstart", overrides: dict | None = None) -> Config:
    """Load a YAML config (a path, or the name of one in configs/), apply dotted-key overrides, validate."""
    data: dict = {}
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return Config.from_dict(data)


def resolve_base_model(config: Config) -> Config:
    """The config with its base_model section (if any) checked against its file and made concrete:
    the file's sha256, input size and cut names (tfxfer.models.external.resolve). TensorFlow loads
    here; every error is a UserError raised before anything is written."""
    if config.base_model.path is None:
        return config
    from tfxfer.models import external

    return dataclasses.replace(config, base_model=external.resolve(config.base_model))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
