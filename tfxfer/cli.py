"""The `tfxfer` command line: parses flags and calls the library, nothing more."""
from __future__ import annotations

import os
import sys

import click

# TensorFlow's C++ start-up chatter would bury the progress bar; users can set this themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfxfer.errors import UserError  # noqa: E402

# Flag → config key; flags left unset keep the config's value.
TRAIN_OVERRIDES = {
    "dataset": "dataset.name", "data_path": "dataset.path", "data_dir": "dataset.data_dir",
    "split": "split.kind", "split_seed": "split.seed", "arch": "arch.name", "width": "arch.width",
    "epochs": "recipe.epochs", "batch_size": "recipe.batch_size", "lr": "recipe.lr",
    "precision": "recipe.precision", "strategy": "training.strategy", "seed": "seed", "out": "out",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfxfer")
def cli():
    """tfxfer: how transferable are features in deep neural networks?

    Split a dataset's classes into tasks A and B, train base networks on each, then copy their
    first n layers into new networks (frozen or fine-tuned) and train those on a target task.
    """


@cli.command()
@click.option("--config", "config_name", default="quickstart", show_default=True,
              help="A YAML file, or the name of one in configs/ (see `tfxfer list configs`).")
@click.option("--treatment", default="baseB", show_default=True,
              help="baseA, baseB, AnB, AnB+, BnB, BnB+, BnA, BnA+, AnA, AnA+ or random.")
@click.option("--n", type=int, default=None, help="Layers copied from the base net, 1..7 (not for baseA/baseB).")
@click.option("--dataset", help="synthetic, cifar10, cifar100, tfds:NAME or folder:PATH.")
@click.option("--data-path", help="A local copy of the dataset (class folders or the python-format archive).")
@click.option("--data-dir", help="TFDS data_dir, for tfds:NAME datasets.")
@click.option("--split", help="How classes are split into A and B: random, dissimilar or explicit.")
@click.option("--split-seed", type=int, help="Seed of a random split.")
@click.option("--arch", help="Architecture (see `tfxfer list archs`).")
@click.option("--width", type=float, help="Multiplies every layer's width.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="Global batch size, over all replicas.")
@click.option("--lr", type=float, help="Initial learning rate.")
@click.option("--precision", help="float32, mixed_bfloat16 or mixed_float16.")
@click.option("--strategy", help="auto, default, mirrored or multiworker (reads TF_CONFIG).")
@click.option("--seed", type=int, help="Seed for initialization, data order and augmentation.")
@click.option("--out", help="Directory that holds the run directories.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config_name, treatment, n, quiet, **flags):
    """Train one network; base nets it copies from are trained first, or reused if finished.

    Rerunning an interrupted command resumes from its last finished epoch.
    """
    from tfxfer.config import load_config
    from tfxfer.experiments.runner import run
    from tfxfer.experiments.runspec import RunSpec

    overrides = {TRAIN_OVERRIDES[k]: v for k, v in flags.items() if v is not None}
    config = load_config(config_name, overrides)
    spec = RunSpec(treatment, n, config)
    run(spec, verbose=not quiet)


@cli.command("list")
@click.argument("kind", type=click.Choice(["archs", "datasets", "treatments", "configs"]))
def list_(kind):
    """List the registered architectures, datasets, treatments or bundled configs."""
    if kind == "archs":
        from tfxfer.models import list_archs as names
    elif kind == "datasets":
        from tfxfer.data.registry import list_datasets as names
    elif kind == "configs":
        from tfxfer.config import list_configs as names
    else:
        from tfxfer.treatments import TREATMENTS

        names = lambda: list(TREATMENTS)  # noqa: E731
    for name in names():
        click.echo(name)


def main(argv=None):
    try:
        # standalone_mode=False lets UserError through to be printed as one line below.
        rv = cli.main(args=argv, prog_name="tfxfer", standalone_mode=False)
    except UserError as e:
        click.echo(f"tfxfer: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("tfxfer: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
