"""The command line's click types and the option groups several commands share.

Values are checked and converted here, at the edge: the library gets lists and ints, and a bad value
is refused with one line naming the flag, the value and what is allowed (see `tfxfer.cli.main`).
Registries are read when first needed, so importing this module loads no TensorFlow.
"""
from __future__ import annotations

import functools
import importlib

import click

from tfxfer.treatments import N_MAX

# --- types ------------------------------------------------------------------------------------------

class Names(click.Choice):
    """One of a registry's names. `registry` is "module:ATTR" (a dict, a sequence, or a function
    returning one), imported when first needed; with `metavar`, --help shows it instead of the names
    and does not import the registry (for registries in modules that load TensorFlow)."""

    def __init__(self, registry: str, metavar: str | None = None):
        self.registry, self.metavar, self.case_sensitive = registry, metavar, True

    @functools.cached_property
    def choices(self) -> tuple[str, ...]:
        module, attr = self.registry.split(":")
        names = getattr(importlib.import_module(module), attr)
        return tuple(names() if callable(names) else names)

    def get_metavar(self, param, **ctx):  # click 8.2 passes ctx= too, 8.1 does not
        return self.metavar or super().get_metavar(param, **ctx)


class CommaList(click.ParamType):
    """'a,b,c' → [a, b, c], each item converted (and checked) by `item`."""
    name = "list"

    def __init__(self, item: click.ParamType, metavar: str):
        self.item, self.metavar = item, metavar

    def get_metavar(self, param, **ctx):
        return f"{self.metavar}[,{self.metavar}...]"

    def convert(self, value, param, ctx):
        items = list(value) if isinstance(value, (list, tuple)) else [s.strip() for s in str(value).split(",")]
        if not items or "" in items:
            self.fail(f"{value!r} is not a comma-separated list of {self.metavar}", param, ctx)
        return [self.item.convert(item, param, ctx) for item in items]


TREATMENT = Names("tfxfer.treatments:TREATMENTS", metavar="TREATMENT")
LAYERS = CommaList(Names("tfxfer.models:LAYER_NAMES"), "LAYER")
# Layers each run checks against its own (a model-file run's are its base model's cut names, head, logits).
RUN_LAYERS = CommaList(click.STRING, "LAYER")
POSITIVE = click.IntRange(min=1)


# --- option groups shared by several commands -------------------------------------------------------

def options(*decorators):
    """Apply click options and arguments in the order listed (the order --help shows them in)."""
    def wrap(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return wrap


RUN_DIR = click.argument("run_dir", type=click.Path())
IMAGES = click.argument("images", nargs=-1, required=True, type=click.Path())
LABEL = click.option("--label", help="True class of every image (default: the image's folder name, "
                                     "if it is a class; else the top class).")
QUIET = click.option("--quiet", is_flag=True, help="No progress bars or lines.")
TREATMENT_N = options(
    click.option("--treatment", type=TREATMENT, default="baseB", show_default=True,
                 help="Which network (see `tfxfer list treatments`): baseA, baseB, AnB, AnB+, BnB, BnB+, ..."),
    click.option("--n", type=click.IntRange(0, N_MAX), default=None,
                 help=f"Layers copied from the base net, 1..{N_MAX} (not for baseA/baseB)."),
)
DATA_DIR = click.option("--data-dir", help="TFDS data_dir, for tfds:NAME datasets.")
# Features from an export of the run instead of the run itself (features, probe).
SERVER = options(
    click.option("--server", help="http://HOST:PORT (REST) or grpc://HOST:PORT (gRPC) of TF Serving or tfxfer serve."),
    click.option("--model", help="Model name on the server."),
    click.option("--version", "version", type=POSITIVE, help="Model version on the server (default: the newest)."),
    click.option("--export", "export_path", help="Or run EXPORT_BASE/<name>[/<version>] in this process."),
)


def batch_size_option(default: int, help: str = "Images through the network at once."):
    return click.option("--batch-size", type=POSITIVE, default=default, show_default=True, help=help)


def run_layers_option(verb: str):
    """--layers of a command that reads one run's layers (checked by the run: a model file's are its own)."""
    return click.option("--layers", type=RUN_LAYERS, help=f"Comma-separated layers to {verb} (default: conv1..fc7; "
                                                          "a model-file run's: its cuts and head).")


def seed_option(help: str):
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def data_options(dataset_help: str, data_path_help: str = "A local copy of --dataset (cifar10/cifar100).",
                 data_dir: bool = True):
    """--dataset and --data-path (and --data-dir): where images come from."""
    return options(click.option("--dataset", help=dataset_help), click.option("--data-path", help=data_path_help),
                   *([DATA_DIR] if data_dir else []))


# The target of `probe` and `score`.
TARGET = data_options("Target: A or B (a task of the run's split; default: the task it was not trained on), "
                      "or a dataset: synthetic, cifar10, cifar100, tfds:NAME or folder:PATH.")

VIEW = click.option("--view", type=Names("tfxfer.probes.features:VIEWS", metavar="VIEW"), default="flatten",
                    show_default=True, help="Conv features: flatten (the whole map) or avg (its global average).")
