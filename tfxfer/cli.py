"""The `tfxfer` command line: parses flags and calls the library, nothing more."""
from __future__ import annotations

import sys

import click

from tfxfer.cli_options import (
    IMAGES,
    LABEL,
    LAYERS,
    POSITIVE,
    QUIET,
    RUN_DIR,
    RUN_LAYERS,
    SERVER,
    TARGET,
    TREATMENT_N,
    VIEW,
    CommaList,
    Names,
    batch_size_option,
    data_options,
    options,
    run_layers_option,
    seed_option,
)
from tfxfer.errors import RunFailed, UserError

# Flag → config key; flags left unset keep the config's value.
TRAIN_OVERRIDES = {
    "dataset": "dataset.name", "data_path": "dataset.path", "data_dir": "dataset.data_dir",
    "split": "split.kind", "split_seed": "split.seed", "arch": "arch.name", "width": "arch.width",
    "variant": "arch.variant",
    "epochs": "recipe.epochs", "batch_size": "recipe.batch_size", "lr": "recipe.lr",
    "precision": "recipe.precision", "strategy": "training.strategy", "seed": "seed", "out": "out",
}

# The base model file flags of train, experiment and `list cuts` (see tfxfer.models.external).
BASE_MODEL_OVERRIDES = {"base_model": "base_model.path", "cuts": "base_model.cuts",
                        "base_arch": "base_model.application", "input_size": "base_model.input_size",
                        "preprocessing": "base_model.preprocessing"}


def _base_model_options(fn):
    for flag, kwargs in reversed([
        ("--base-model", {"help": "A Keras model file as the base net (task A's): a .keras file, or a .weights.h5 "
                                  "with --base-arch. Treatments AnB, AnB+ and random then copy it up to a cut."}),
        ("--cuts", {"help": "Where to cut the base model: comma-separated layer names (nested: outer/inner) or "
                            "'auto' (the stage outputs; the default); see `tfxfer list cuts --base-model PATH`."}),
        ("--base-arch", {"help": "The keras.applications architecture of a .weights.h5 base model, e.g. ResNet50."}),
        ("--input-size", {"type": int, "help": "The base model's square input side (for a .weights.h5, or a model "
                                               "of any size)."}),
        ("--preprocessing", {"help": "Input preprocessing of a base model: tfxfer's standardization (default) or "
                                     "Keras Applications' caffe/tf/torch modes, or raw 0..255 pixels."}),
    ]):
        fn = click.option(flag, **kwargs)(fn)
    return fn


def _base_model_overrides(flags: dict) -> dict:
    """Pops the base model flags from `flags` into config overrides (a comma list of cuts as a list)."""
    out = {BASE_MODEL_OVERRIDES[k]: flags.pop(k) for k in BASE_MODEL_OVERRIDES if flags.get(k) is not None}
    cuts = out.get("base_model.cuts")
    if cuts is not None and cuts != "auto":
        out["base_model.cuts"] = [c.strip() for c in cuts.split(",") if c.strip()]
    for k in BASE_MODEL_OVERRIDES:
        flags.pop(k, None)
    return out


TUNE_OVERRIDES = {"tuner": "tuning.tuner", "max_trials": "tuning.max_trials", "out": "out"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfxfer")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own start-up and log lines (hidden by default, "
                                              "unless TF_CPP_MIN_LOG_LEVEL is set).")
def cli(verbose):
    """tfxfer: how transferable are features in deep neural networks?

    Split a dataset's classes into tasks A and B, train base networks on each, then copy their
    first n layers into new networks (frozen or fine-tuned) and train those on a target task.
    """
    from tfxfer.quiet import silence_tensorflow

    silence_tensorflow(verbose)  # before any command loads TensorFlow


@cli.command()
@click.option("--config", "config_name", default="quickstart", show_default=True,
              help="A YAML file, or the name of one in configs/ (see `tfxfer list configs`).")
@TREATMENT_N
@data_options("synthetic, cifar10, cifar100, tfds:NAME or folder:PATH.",
              "A local copy of the dataset (class folders or the python-format archive).")
@click.option("--split", help="How classes are split into A and B: random, dissimilar or explicit.")
@click.option("--split-seed", type=int, help="Seed of a random split.")
@click.option("--arch", type=Names("tfxfer.models:list_archs", metavar="ARCH"),
              help="Architecture (see `tfxfer list archs`).")
@click.option("--width", type=float, help="Multiplies every layer's width.")
@click.option("--variant", type=Names("tfxfer.models:VARIANTS", metavar="VARIANT"),
              help="A Table 3 ablation of the arch, trained from scratch (baseA/baseB only; see `tfxfer list variants`).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="Global batch size, over all replicas.")
@click.option("--lr", type=float, help="Initial learning rate.")
@click.option("--precision", help="float32, mixed_bfloat16 or mixed_float16.")
@click.option("--strategy", help="auto, default, mirrored or multiworker (reads TF_CONFIG).")
@click.option("--seed", type=int, help="Seed for initialization, data order and augmentation.")
@click.option("--out", help="Directory that holds the run directories.")
@QUIET
@_base_model_options
def train(config_name, treatment, n, quiet, **flags):
    """Train one network; base nets it copies from are trained first, or reused if finished.

    Rerunning an interrupted command resumes from its last finished epoch.
    """
    from tfxfer.config import load_config, resolve_base_model
    from tfxfer.runs.spec import RunSpec

    base_model = _base_model_overrides(flags)
    overrides = {TRAIN_OVERRIDES[k]: v for k, v in flags.items() if v is not None}
    config = resolve_base_model(load_config(config_name, {**overrides, **base_model}))
    if n is None and config.base_model.cuts and len(config.base_model.cuts) == 1:
        n = 1  # the one cut given
    spec = RunSpec(treatment, n, config)
    from tfxfer.experiments.runner import run  # TensorFlow loads here, after the flags are checked

    run(spec, verbose=not quiet)


@cli.command()
@click.argument("config_name", metavar="CONFIG")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@click.option("--jobs", type=POSITIVE, default=1, show_default=True,
              help="Runs at once, each in its own process (and on its own GPU(s) when there are GPUs).")
@click.option("--out", help="Output directory shared by every run of the grid (default: the config's out).")
@click.option("--epochs", type=int, help="Override recipe.epochs for every run.")
@click.option("--lease", type=float, default=120.0, show_default=True,
              help="Seconds a claim on a run lasts unless its holder renews it.")
@QUIET
@click.option("--split", "splits", type=click.IntRange(min=0), multiple=True,
              help="Only this entry of experiment.splits (0-based; repeatable), e.g. one split's grid per session.")
@click.option("--reproduce-bases", is_flag=True,
              help="Retrain finished bases whose weights are missing, and go on only where each reproduces its "
                   "record (the same weights digest: same seed, same kind of machine and TensorFlow).")
@_base_model_options
def experiment(config_name, dry_run, jobs, out, epochs, lease, quiet, splits, reproduce_bases, **base_flags):
    """Run a whole transfer grid: every split x treatment x n of CONFIG's experiment section.

    Base nets are trained before the treatments that copy them; finished runs are skipped and
    interrupted ones resume, so rerunning the same command after a crash finishes the grid.
    Several processes or hosts may run the same command on one shared output directory.
    """
    from tfxfer.experiments.experiment import run_experiment

    # The base model flags: config overrides here, and passed on as they are to --jobs workers.
    worker_args = [f for k, v in base_flags.items() if v is not None for f in (f"--{k.replace('_', '-')}", str(v))]
    run_experiment(config_name, out=out, epochs=epochs, splits=splits, jobs=jobs, lease_s=lease, dry_run=dry_run,
                   verbose=not quiet, overrides=_base_model_overrides(dict(base_flags)), worker_args=worker_args,
                   reproduce_bases=reproduce_bases)


@cli.command()
@click.argument("results_dir", metavar="RESULTS_DIR")
@click.option("--scores", is_flag=True, help="First score task B on each baseA without scores (`tfxfer score`; "
                                             "needs its weights) for the section \"Do cheap scores predict the grid?\".")
@click.option("--against", metavar="OTHER_DIR", help="Another results folder (e.g. the same grid under an earlier "
                                                       "recipe): its findings beside these, verdict by verdict.")
def report(results_dir, scores, against):
    """Write results.csv, Figures 2-3, Table 1 and report.md/.html from RESULTS_DIR's result records."""
    from tfxfer.report import write_report

    for path in write_report(results_dir, scores=scores, against=against):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("config_name", metavar="CONFIG")
@TREATMENT_N
@click.option("--tuner", help="random, bayesian or hyperband (default: the config's tuning.tuner).")
@click.option("--max-trials", type=int, help="How many trials in all, counting finished ones (tuning.max_trials).")
@click.option("--out", help="Directory that holds the search (<out>/tune/) and, later, the runs.")
@QUIET
def tune(config_name, treatment, n, quiet, **flags):
    """Search the recipe (CONFIG's tuning.space) for one treatment with keras-tuner.

    Each trial trains an ordinary run; its score is the top-1 on the validation images held out of
    the training images. The best values are written as a config for `tfxfer train --config`.
    Rerunning the same command continues the search. Distributed: see the README (KERASTUNER_*).
    """
    from tfxfer.config import load_config
    from tfxfer.tuning import tune as search

    overrides = {TUNE_OVERRIDES[k]: v for k, v in flags.items() if v is not None}
    search(load_config(config_name, overrides), treatment, n, verbose=not quiet)


@cli.command("list")
@click.argument("kind", type=click.Choice(["archs", "variants", "datasets", "treatments", "configs", "cuts"]))
@_base_model_options
def list_(kind, **base_flags):
    """List the registered architectures, arch variants, datasets, treatments or bundled configs,
    or the cut points of a base model file (cuts --base-model PATH: name, output shape, 'auto' mark)."""
    if kind == "cuts":
        from tfxfer.config import load_config

        config = load_config(None, _base_model_overrides(base_flags))
        if config.base_model.path is None:
            raise UserError("list cuts needs --base-model PATH")
        from tfxfer.models import external  # TensorFlow loads here

        model = external.load_base_model(config.base_model)
        auto = set(external.auto_cuts(model))
        for cut in external.cut_points(model):
            click.echo(f"{cut.name}\t{cut.shape}" + ("\tauto" if cut.name in auto else ""))
        return
    if kind == "archs":
        from tfxfer.models import list_archs as names
    elif kind == "variants":
        from tfxfer.models import VARIANTS

        names = lambda: [f"{name}\t{v.description}" for name, v in VARIANTS.items()]  # noqa: E731
    elif kind == "datasets":
        from tfxfer.data.registry import list_datasets as names
    elif kind == "configs":
        from tfxfer.config import list_configs as names
    else:
        from tfxfer.treatments import TREATMENTS

        names = lambda: list(TREATMENTS)  # noqa: E731
    for name in names():
        click.echo(name)


@cli.group()
def visualize():
    """Look inside a finished run as Zeiler & Fergus (2014) did; figures are PNGs in <run>/visualize."""


def _figure_options(batch_size: int | None):
    """The options every visualize command shares; --batch-size where images go through the network."""
    return options(*([] if batch_size is None else [batch_size_option(batch_size)]),
                   click.option("--out", help="Directory for the PNGs (default: <run>/visualize)."),
                   click.option("--tensorboard", is_flag=True, help="Also log the figures to the run's TensorBoard."))


def _echo_written(written):
    for path in written.values():
        click.echo(str(path))


@visualize.command("filters")
@RUN_DIR
@click.option("--epochs", is_flag=True, help="The filters after every epoch, side by side (Fig. 4).")
@_figure_options(batch_size=None)
def visualize_filters(run_dir, epochs, out, tensorboard):
    """conv1's filters as an image grid, from the final weights or every epoch's logged kernel."""
    from tfxfer.visualize import draw_filters

    _echo_written(draw_filters(run_dir, epochs=epochs, out=out, tensorboard=tensorboard))


@visualize.command("occlusion")
@RUN_DIR
@IMAGES
@click.option("--size", type=int, default=8, show_default=True, help="Side of the grey square, in input pixels.")
@click.option("--stride", type=int, default=2, show_default=True, help="Pixels between occluder positions.")
@LABEL
@_figure_options(batch_size=256)
def visualize_occlusion(run_dir, images, size, stride, label, out, tensorboard, batch_size):
    """Slide a grey square over each image; map class probability, top label and conv5 activity (Fig. 7)."""
    from tfxfer.visualize import draw_occlusion

    _echo_written(draw_occlusion(run_dir, images, size=size, stride=stride, label=label, batch_size=batch_size,
                                 out=out, tensorboard=tensorboard))


@visualize.command("deconv")
@RUN_DIR
@click.option("--layer", "layers", type=Names("tfxfer.visualize.inputs:CONV_LAYERS", metavar="LAYER"), multiple=True,
              default=["conv3"], show_default=True, help="conv1..conv5; repeat for several (one figure each).")
@click.option("--maps", type=int, default=16, show_default=True, help="Feature maps shown (a seeded random subset).")
@click.option("--top", type=int, default=9, show_default=True, help="Strongest activations shown per map.")
@data_options("Search this dataset's test images (a dataset name, see `tfxfer list datasets`); "
              "default: the run's own test images.", "A local copy of --dataset.", data_dir=False)
@click.option("--max-images", type=int, help="Search at most this many images (a seeded random subset).")
@seed_option("Seed of the map and image subsets.")
@_figure_options(batch_size=128)
def visualize_deconv(run_dir, layers, maps, top, dataset, data_path, max_images, seed, out, tensorboard, batch_size):
    """Project each map's top activations over a dataset to pixel space with a deconvnet (Figs. 1, 2)."""
    from tfxfer.visualize import draw_deconv

    _echo_written(draw_deconv(run_dir, layers, maps=maps, top=top, dataset=dataset, data_path=data_path,
                              max_images=max_images, seed=seed, batch_size=batch_size, out=out,
                              tensorboard=tensorboard))


@visualize.command("invariance")
@RUN_DIR
@IMAGES
@click.option("--shift", type=float, default=0.25, show_default=True,
              help="Largest vertical shift, as a fraction of the image side.")
@click.option("--scale", type=(float, float), default=(0.6, 1.8), show_default=True, help="Smallest and largest scale.")
@click.option("--angle", type=float, default=360.0, show_default=True, help="Largest rotation in degrees.")
@click.option("--steps", type=int, default=17, show_default=True, help="Values of each transform.")
@LABEL
@_figure_options(batch_size=256)
def visualize_invariance(run_dir, images, shift, scale, angle, steps, label, out, tensorboard, batch_size):
    """Translate, scale and rotate each image; plot conv1/fc7 feature distances and p(true class) (Fig. 5)."""
    from tfxfer.visualize import Ranges, draw_invariance

    _echo_written(draw_invariance(run_dir, images, Ranges(shift, tuple(scale), angle, steps), label=label,
                                  batch_size=batch_size, out=out, tensorboard=tensorboard))


@cli.command("export")
@RUN_DIR
@click.option("--layers", type=CommaList(Names("tfxfer.models.external:EXPORTABLE_LAYERS", metavar="LAYER"), "LAYER"),
              required=True, help="Comma-separated layers to output: conv1..conv5, fc6, fc7, fc8; for a base model "
                                  "file's run: cut (the cut's features), head1.., logits.")
@click.option("--out", required=True, help="The export base: the model goes to OUT/<name>/<version>/.")
@click.option("--name", help="Model name (default: the run id, '+' spelled '_ft').")
@click.option("--version", "version", type=POSITIVE, help="Version number (default: one more than the newest).")
@click.option("--conv", type=Names("tfxfer.export.savedmodel:CONV_REDUCTIONS", metavar="CONV"), default="avg",
              show_default=True, help="Conv layer features: avg (global-average-pooled [C]) or flatten ([H*W*C]).")
@click.option("--top-k", type=POSITIVE, default=5, show_default=True, help="Classes the classify signature returns.")
@click.option("--serving-config", default="serving/models.config", show_default=True,
              help="TF Serving model_config_list file to add the model to ('' for none).")
def export(run_dir, layers, out, name, version, conv, top_k, serving_config):
    """Export a finished run as a feature-extractor SavedModel in TF Serving's layout."""
    from tfxfer.export import export_run

    target = export_run(run_dir, layers, out, name=name, version=version, conv=conv, top_k=top_k,
                        serving_config=serving_config or None)
    click.echo(f"exported {target}" + (f"; {serving_config} lists it" if serving_config else ""))


@cli.command()
@click.argument("export_base")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8501, show_default=True, help="REST port.")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8500, show_default=True, help="gRPC port.")
@click.option("--max-batch-size", type=POSITIVE, default=32, show_default=True,
              help="Rows of concurrent requests run together as one batch.")
@click.option("--batch-timeout-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long a batch waits for more requests (0: no batching).")
@click.option("--batch-threads", type=POSITIVE, default=2, show_default=True, help="Batches computed at once.")
@click.option("--poll-s", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Seconds between scans of EXPORT_BASE for new versions.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="Largest request accepted.")
def serve(export_base, host, port, grpc_port, max_batch_size, batch_timeout_ms, batch_threads, poll_s, max_body_mb):
    """Serve every model in EXPORT_BASE over TF Serving's REST and gRPC APIs (newest version of each)."""
    from tfxfer.serving.batching import BatchingOptions
    from tfxfer.serving.server import run_server

    batching = BatchingOptions(max_batch_size, batch_timeout_ms / 1000, batch_threads)
    run_server(export_base, host=host, port=port, grpc_port=grpc_port, batching=batching, poll_s=poll_s,
               max_body_bytes=int(max_body_mb * 2**20))


@cli.command()
@click.option("--images", help="A folder of images: FOLDER/<class>/* (labelled) or FOLDER/* (label -1).")
@data_options("Or a dataset: synthetic, cifar10, cifar100, tfds:NAME or folder:PATH.",
              "A local copy of the dataset (cifar10/cifar100).")
@click.option("--part", type=click.Choice(["train", "test"]), default="test", show_default=True,
              help="Which part of the dataset.")
@click.option("--per-class", type=POSITIVE, help="At most this many images per class of the dataset.")
@SERVER
@click.option("--out", required=True, help="The .npz to write.")
@batch_size_option(32, help="Images per request.")
@QUIET
def features(images, dataset, data_path, data_dir, part, per_class, server, model, version, export_path, out,
             batch_size, quiet):
    """Compute features of a folder of images or a dataset and write them, with labels, to an .npz."""
    if (images is None) == (dataset is None):
        raise UserError("give exactly one of --images FOLDER and --dataset NAME")
    if (server is None) == (export_path is None):
        raise UserError("give exactly one of --server (http://HOST:PORT or grpc://HOST:PORT) and --export PATH")
    from tfxfer.serving.client import connect
    from tfxfer.serving.features import dataset_features, folder_features, summary, write_npz

    client = connect(server, model, version, export_path)
    if images is not None:
        arrays = folder_features(client, images, batch_size, verbose=not quiet)
    else:
        arrays = dataset_features(client, dataset, part, batch_size, verbose=not quiet, path=data_path,
                                  data_dir=data_dir, train_per_class=per_class, test_per_class=per_class)
    click.echo(summary(write_npz(out, arrays), arrays))


@cli.command()
@RUN_DIR
@TARGET
@run_layers_option("probe")
@click.option("--classifier", "classifiers", type=CommaList(Names("tfxfer.probes.linear:CLASSIFIERS"), "CLASSIFIER"),
              default="softmax,svm", show_default=True,
              help="softmax (multinomial logistic regression) and/or svm (linear SVM).")
@click.option("--per-class", type=CommaList(POSITIVE, "K"), default="5,10,30", show_default=True,
              help="Training images per class, k.")
@click.option("--folds", type=POSITIVE, default=5, show_default=True, help="Random draws of the k images (seeds SEED+i).")
@click.option("--test-per-class", type=POSITIVE, default=50, show_default=True, help="Test images per class, at most.")
@click.option("--scratch", is_flag=True, help="Also train the architecture from random init on each fold's images.")
@click.option("--scratch-steps", type=POSITIVE, default=300, show_default=True, help="SGD steps of each scratch network.")
@VIEW
@seed_option("Seed of fold 0.")
@batch_size_option(256)
@SERVER
@click.option("--out", help="Output directory (default: RUN_DIR/probes/<target>-<view>).")
@QUIET
def probe(run_dir, quiet, server, model, version, export_path, **options):
    """Linear probes of every layer on a new dataset, k images per class (Zeiler & Fergus Table 7, Fig. 9).

    Writes probe.csv, probe.md (rows classifier (layer), columns k), probe_vs_k.png,
    probe_vs_layer.png and TensorBoard scalars (OUT/tb).
    """
    from tfxfer.probes import probe as run_probe

    written = run_probe(run_dir, server=server, model=model, version=version, export=export_path,
                        verbose=not quiet, **options)
    for path in written.values():
        click.echo(f"wrote {path}")


@cli.command()
@RUN_DIR
@TARGET
@run_layers_option("score")
@click.option("--metric", "metrics", type=CommaList(Names("tfxfer.scores.metrics:METRICS"), "METRIC"),
              help="Comma-separated: logme, leep, nce, hscore, hscore-lw, transrate (default: all).")
@click.option("--max-images", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Target training images scored, at most (a seeded random subset).")
@click.option("--view", type=Names("tfxfer.probes.features:VIEWS", metavar="VIEW"), default="avg", show_default=True,
              help="Conv features: avg (each map's global average) or flatten (the whole map, as probes).")
@seed_option("Seed of the image subset.")
@batch_size_option(256)
@click.option("--out", help="Output directory (default: RUN_DIR/scores/<target>-<view>).")
@QUIET
def score(run_dir, quiet, **options):
    """Transferability scores (LogME, LEEP, NCE, H-score, TransRate) of every layer for a target task.

    Writes score.csv, score.md, score.json, score_vs_layer.png and TensorBoard scalars (OUT/tb).
    """
    from tfxfer.scores.score import score as run_score

    for path in run_score(run_dir, verbose=not quiet, **options).values():
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="RUN_DIR RUN_DIR | EXPERIMENT_DIR")
@click.option("--layers", type=RUN_LAYERS, help="Comma-separated layers, each of every run (default: each run's "
                                                "own: conv1..fc8, or a model-file run's cuts, head and logits).")
@data_options("Images: this dataset's test images (default: the first run's dataset).", data_dir=False)
@click.option("--max-images", type=POSITIVE, default=5000, show_default=True,
              help="At most this many (a seeded subset).")
@click.option("--kernel", type=Names("tfxfer.probes.cka:KERNELS", metavar="KERNEL"), default="linear",
              show_default=True, help="linear or rbf.")
@VIEW
@batch_size_option(1024, help="Images per CKA minibatch.")
@click.option("--passes", type=POSITIVE, default=1, show_default=True,
              help="Shuffled passes over the images; more come closer to full-batch CKA.")
@seed_option("Seed of the image subset and order.")
@click.option("--out", help="Output directory (default: RUN_DIR/similarity/<other run> or EXPERIMENT_DIR/similarity).")
@QUIET
def similarity(paths, quiet, **options):
    """Layer-by-layer CKA of two runs, or of every base pair and transferred run of an experiment directory.

    Writes similarity.csv, a layer x layer heatmap per pair, cka_diagonal.png (same-layer CKA over
    the layers a pair shares by name) and similarity.md.
    """
    from tfxfer.probes import similarity as run_similarity

    for path in run_similarity(paths, verbose=not quiet, **options).values():
        click.echo(f"wrote {path}")


@cli.group()
def diagnose():
    """Zeiler & Fergus's diagnostics of a finished run: first-layer filter health (§4.1, Fig. 6)
    and part correspondence (§4.3, Table 1). (Their Table 3 ablations: `experiment.variants`.)"""


@diagnose.command("filters", short_help="conv1 filter health: norms, frequency bands, dead filters (Fig. 6).")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(), metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--out", help="Write OUT/<run_id>/ per run and OUT/filters_summary.csv (default: <run>/diagnose).")
@click.option("--dead-norm", type=float, default=0.1, show_default=True,
              help="Dead: filter RMS below this fraction of the layer's median RMS.")
@click.option("--dead-activation", type=float, default=0.01, show_default=True,
              help="Or dead: mean ReLU activation over the images below this fraction of the layer's median.")
@click.option("--max-images", type=POSITIVE, default=1000, show_default=True,
              help="Activations over at most this many of the run's own task test images (a seeded subset).")
@click.option("--no-data", is_flag=True, help="Judge dead filters by their norm only; load no images.")
@seed_option("Seed of the image subset.")
@batch_size_option(256)
def diagnose_filters(run_dirs, out, dead_norm, dead_activation, max_images, no_data, seed, batch_size):
    """conv1 filter health per run: RMS, spectral energy in low/mid/high bands, dead filters, filters
    above the renormalization radius (arch.renorm_radius, else 0.1). A run whose base is a model file:
    the first Conv2D on the RGB input among its copied layers.

    Bands by radial frequency r of the filter's 2-D DFT, in cycles per pixel: low r < 1/6 (with the
    mean colour), mid 1/6 <= r < 1/3, high r >= 1/3. Writes filters.csv (one row per filter) and
    filters_by_frequency.png per run, and prints one summary line per run.
    """
    from tfxfer.diagnose import diagnose_filters as run_diagnosis
    from tfxfer.diagnose.filters import Thresholds

    healths = run_diagnosis(run_dirs, out=out, thresholds=Thresholds(dead_norm, dead_activation),
                            max_images=None if no_data else max_images, seed=seed, batch_size=batch_size)
    for health in healths:
        click.echo(health.summary_line())


@diagnose.command("correspondence", short_help="Part correspondence under masking (§4.3, Table 1).")
@RUN_DIR
@click.option("--images", "images_dir", required=True, type=click.Path(), help="Directory of the image files.")
@click.option("--parts", "parts_file", required=True, type=click.Path(),
              help="YAML: {image file: {part name: [x0, y0, x1, y1]}}, boxes in each image's own pixels "
                   "(x0, y0 inclusive; x1, y1 exclusive); every image names the same parts.")
@click.option("--layers", type=LAYERS, default="conv5,fc7", show_default=True,
              help="Comma-separated layers of the network.")
@click.option("--random", "draws", type=POSITIVE, default=10, show_default=True,
              help="Random same-size boxes per part and image (the control).")
@seed_option("Seed of the random boxes.")
@batch_size_option(256)
@click.option("--out", help="Output directory (default: <run>/diagnose/correspondence).")
def diagnose_correspondence(run_dir, images_dir, parts_file, layers, draws, seed, batch_size, out):
    """Mask the same part in every image; how consistently does each layer's feature change?

    For each image i, eps_i = features(image) - features(image with the part's box in the mean
    colour); per pair i != j, the share of features whose sign(eps) differs (normalized Hamming).
    Writes correspondence.md (Table 1's shape: mean ± std over pairs per part and layer, and the
    random-box control) and correspondence.csv (with Delta, the sum over ordered pairs).

    \b
    parts.yaml:
      dog1.jpg:
        left_eye: [40, 52, 58, 66]
        nose: [60, 80, 84, 100]
      dog2.jpg:
        ...
    """
    from tfxfer.diagnose import diagnose_correspondence as run_analysis

    written = run_analysis(run_dir, images_dir, parts_file, layers=layers, draws=draws, seed=seed,
                           batch_size=batch_size, out=out)
    click.echo(written["md"].read_text().rstrip())
    for path in written.values():
        click.echo(f"wrote {path}")


def main(argv=None):
    try:
        # standalone_mode=False lets UserError and a refused value through to be printed as one line below.
        rv = cli.main(args=argv, prog_name="tfxfer", standalone_mode=False)
    except UserError as e:
        click.echo(f"tfxfer: error: {e}", err=True)
        sys.exit(2)
    except click.BadParameter as e:  # a flag's value its type refused: one line too, naming the flag
        click.echo(f"tfxfer: error: {e.format_message()}", err=True)
        sys.exit(2)
    except RunFailed as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("tfxfer: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
