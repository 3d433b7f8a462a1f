"""Bring your own network: a Keras model file as the base, cut at named layers (issue 20)."""
import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import tiny_config
from tfxfer.config import BaseModelConfig, resolve_base_model
from tfxfer.errors import UserError
from tfxfer.experiments.runner import run
from tfxfer.models import external
from tfxfer.runs.finished import load_run
from tfxfer.runs.spec import RunSpec
from tfxfer.treatments import build_file_treatment

SIZE = 16


def build(config, treatment, n, num_classes, seed=0):
    return build_file_treatment(treatment, n, config.base_model, config.recipe, num_classes, seed=seed)


def small_model(name="small") -> keras.Model:
    """Batch norm, a nested sub-model, a residual add, downsampling, a hidden Dense: the cases to cut."""
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    inner_in = keras.Input((SIZE, SIZE, 6))
    y = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inner_in)
    y = keras.layers.BatchNormalization(name="bn")(y)
    block = keras.Model(inner_in, keras.layers.ReLU(name="relu")(y), name="block")
    x = keras.layers.Add(name="add")([block(x), x])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(8, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name=name)
    # Batch norm statistics that are not the initial 0/1, so keeping them is visible.
    for layer in (model.get_layer("stem_bn"), block.get_layer("bn")):
        layer.moving_mean.assign(np.full(6, 0.3, np.float32))
        layer.moving_variance.assign(np.full(6, 2.0, np.float32))
    return model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("byon") / "small.keras"
    small_model().save(path)
    return path


def byon_config(tmp_path, path, **base_model):
    return resolve_base_model(tiny_config(
        tmp_path, base_model={"path": str(path), **base_model},
        dataset={"train_per_class": 12, "test_per_class": 4, "val_fraction": 0.25},
        recipe={"epochs": 1, "batch_size": 16, "lr": 0.05, "optimizer": "sgd"}))


def images(k=4, seed=0):
    return np.random.default_rng(seed).normal(size=(k, SIZE, SIZE, 3)).astype("float32")


def test_cut_points_name_nested_layers_and_auto_picks_stage_outputs(model_file):
    model = external.load_base_model(BaseModelConfig(path=str(model_file)))
    names = [c.name for c in external.cut_points(model)]
    assert names[:5] == ["stem", "stem_bn", "stem_relu", "block/conv", "block/bn"]
    assert {"block", "block/relu", "add", "pool", "gap", "fc"} <= set(names)
    # The last layer at 16x16 (the input of the pooling), the last at 8x8, the hidden Dense.
    assert external.auto_cuts(model) == ["add", "conv2", "fc"]


def test_the_cut_is_exact(model_file):
    model = external.load_base_model(BaseModelConfig(path=str(model_file)))
    x = images()
    # The rest of the network on the truncated model's output gives the original's output.
    gap = external.truncate(model, "gap")(x)
    np.testing.assert_allclose(model.get_layer("logits")(model.get_layer("fc")(gap)), model(x), atol=1e-6)
    # Inside the nested model: its last layer is the nested model's output.
    np.testing.assert_allclose(external.truncate(model, "block/relu")(x), external.truncate(model, "block")(x),
                               atol=1e-6)
    # And the cut matches the original's intermediate tensor, computed by the whole graph.
    probe = keras.Model(model.inputs, [model.get_layer("add").output, model.output])
    np.testing.assert_allclose(external.truncate(model, "add")(x), probe(x)[0], atol=1e-6)


def trunk_weights(model):
    return [np.array(w) for w in model.get_layer(external.TRUNK).weights]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, model_file):
    """AnB, AnB+ and random at cut 2 ("add"), a few SGD steps each on tiny synthetic data."""
    tmp = tmp_path_factory.mktemp("byon_runs")
    config = byon_config(tmp, model_file, cuts=["block/bn", "add"], head=[8])
    return config, {t: run(RunSpec(t, 2, config), verbose=False) for t in ("AnB", "AnB+", "random")}


def test_frozen_copies_keep_weights_and_bn_statistics_fine_tuned_ones_change(trained, model_file):
    config, records = trained
    out = Path(config.out)
    assert config.base_model.sha256 == external.file_sha256(model_file)
    base = [np.array(w) for w in external.truncate(external.load_base_model(config.base_model), "add").weights]
    assert records["AnB"]["cut"] == "add" and records["AnB"]["n"] == 2
    assert records["AnB"]["base_model_sha256"] == config.base_model.sha256 and records["AnB"]["base_run_id"] is None
    frozen = trunk_weights(load_run(out / records["AnB"]["run_id"]).model)
    tuned = trunk_weights(load_run(out / records["AnB+"]["run_id"]).model)
    assert len(frozen) == len(base) and all(np.array_equal(a, b) for a, b in zip(frozen, base))  # BN stats too
    assert not all(np.array_equal(a, b) for a, b in zip(tuned, base))
    # The random control: the same layers re-initialized (fresh BN statistics), and frozen.
    random = trunk_weights(load_run(out / records["random"]["run_id"]).model)
    again = trunk_weights(build(config, "random", 2, 12, seed=config.seed))
    assert [a.shape for a in random] == [b.shape for b in base]
    assert not any(np.array_equal(a, b) for a, b in zip(random, base) if a.ndim == 4)  # conv kernels
    assert not any(np.allclose(a, 0.3) for a in random)  # the base's moving means are 0.3
    assert all(np.array_equal(a, b) for a, b in zip(random, again))


def test_an_export_of_a_cut_serves_its_features(trained, tmp_path):
    import tensorflow as tf

    from tfxfer.export import export_run

    config, records = trained
    finished = load_run(Path(config.out) / records["AnB"]["run_id"])
    path = export_run(finished.run_dir, ["cut", "logits"], tmp_path / "exports", name="byon")
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = tf.saved_model.load(str(path)).signatures["features_from_pixels_uint8"](pixels=tf.constant(pixels))
    # The cut's features: the copied layers on the run's own preprocessing, averaged over the map.
    trunk = finished.model.get_layer(external.TRUNK)
    want = np.mean(trunk(finished.inputs(pixels), training=False), axis=(1, 2))
    np.testing.assert_allclose(got["cut"].numpy(), want, atol=1e-5)
    np.testing.assert_allclose(got["logits"].numpy(), finished.model(finished.inputs(pixels)), atol=1e-5)


def test_run_ids_follow_the_files_content_not_its_path(tmp_path, model_file):
    config = byon_config(tmp_path, model_file, cuts=["add"])
    moved = dataclasses.replace(config, base_model=dataclasses.replace(config.base_model, path="/elsewhere.keras"))
    assert RunSpec("AnB", 1, config).run_id == RunSpec("AnB", 1, moved).run_id
    assert RunSpec("AnB", 1, config).base is None
    with pytest.raises(UserError, match="treatment BnB is not allowed with a base model file; allowed: baseB, AnB"):
        RunSpec("BnB", 1, config)
    with pytest.raises(UserError, match=r"n=2 is out of range for AnB; allowed: 1..1"):
        RunSpec("AnB", 2, config)


def test_sequential_works_and_subclassed_is_one_clear_error(tmp_path):
    seq = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, name="c1"),
                            keras.layers.MaxPooling2D(name="p1"), keras.layers.Flatten(name="flat"),
                            keras.layers.Dense(3, name="out")])
    seq.save(tmp_path / "seq.keras")
    config = resolve_base_model(tiny_config(tmp_path, base_model={"path": str(tmp_path / "seq.keras")}))
    assert config.base_model.cuts == ["c1", "p1"]
    net = build(config, "AnB", 2, 4)
    x = images()
    np.testing.assert_allclose(net.get_layer(external.TRUNK)(x), seq.get_layer("p1")(seq.get_layer("c1")(x)),
                               atol=1e-6)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(UserError, match="subclassed model \\(Net\\), which has no layer graph to cut"):
        external.check_model(Net(), "net.keras")


def cli(capsys, *args):
    from tfxfer.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_list_cuts_names_every_cut_and_marks_the_auto_ones(capsys, model_file):
    code, out, _ = cli(capsys, "list", "cuts", "--base-model", model_file)
    assert code == 0
    assert "block/conv\t(None, 16, 16, 6)\n" in out and "add\t(None, 16, 16, 6)\tauto\n" in out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "corrupt.keras").write_bytes(b"not a zip archive")
    vectors = keras.Input((20,))
    keras.Model(vectors, keras.layers.Dense(2)(vectors)).save(tmp / "vectors.keras")
    (tmp / "saved_model").mkdir()
    return tmp


@pytest.mark.parametrize("case, args, message", [
    ("missing", ["--base-model", "{bad}/missing.keras"], "missing.keras does not exist"),
    ("corrupt", ["--base-model", "{bad}/corrupt.keras"], "corrupt.keras cannot be loaded: "),
    ("savedmodel", ["--base-model", "{bad}/saved_model"], "is a directory (a SavedModel?)"),
    ("not an image", ["--base-model", "{bad}/vectors.keras"], "input shape (None, 20) is not an image batch"),
    ("unknown cut", ["--base-model", "{model}", "--cuts", "add,bloc/relu"],
     "cut 'bloc/relu' is not a layer of base model"),
    ("treatment", ["--base-model", "{model}", "--cuts", "add", "--treatment", "BnB"],
     "treatment BnB is not allowed with a base model file"),
])
def test_bad_base_model_input_is_one_line_exit_2_nothing_written(case, args, message, bad_files, model_file,
                                                                  tmp_path, capsys):
    args = [a.format(bad=bad_files, model=model_file) for a in args]
    code, _, err = cli(capsys, "train", "--treatment", "AnB", *args, "--out", tmp_path / "runs")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tfxfer: error: "), err
    assert message in lines[0], lines[0]
    if case == "unknown cut":  # a few valid names, and how to list them all
        assert "e.g. block/relu, " in lines[0] and f"tfxfer list cuts --base-model {model_file}" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_an_experiment_over_cuts_plans_the_files_treatments_and_a_baseB(tmp_path, model_file):
    from tfxfer.experiments.planner import plan_experiment

    plan = plan_experiment(byon_config(tmp_path, model_file))  # auto cuts: add, conv2, fc
    assert sorted((r.treatment, r.n) for r in plan.runs) == sorted(
        [("baseB", 0)] + [(t, n) for t in ("AnB", "AnB+", "random") for n in (1, 2, 3)])
    assert plan.runs[0].treatment == "baseB" and set(plan.deps.values()) == {None}
    assert "cut=conv2" in plan.describe(tmp_path)


def test_a_weights_file_with_a_keras_applications_architecture(tmp_path):
    kwargs = {"alpha": 0.35, "include_top": False}
    app = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), **kwargs)
    app.save_weights(tmp_path / "mobilenet.weights.h5")
    config = resolve_base_model(tiny_config(tmp_path, base_model={
        "path": str(tmp_path / "mobilenet.weights.h5"), "application": "MobileNetV2", "application_kwargs": kwargs,
        "input_size": 32, "preprocessing": "tf"}))
    # The stage outputs: the last layer at each resolution (16, 8, 4, 2, 1 pixels), not the padding layers'.
    cuts = config.base_model.cuts
    assert len(cuts) == 5 and not any("pad" in c for c in cuts) and cuts[-1] == "out_relu", cuts
    net = build(config, "AnB", 2, 4)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    want = keras.Model(app.inputs, app.get_layer(cuts[1]).output)(x)
    np.testing.assert_allclose(net.get_layer(external.TRUNK)(x), want, atol=1e-5)
    with pytest.raises(UserError, match="cannot be loaded as MobileNetV2\\(alpha=0.5\\)"):
        resolve_base_model(tiny_config(tmp_path, base_model={
            "path": str(tmp_path / "mobilenet.weights.h5"), "application": "MobileNetV2",
            "application_kwargs": {"alpha": 0.5}, "input_size": 32}))


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_keras_applications_preprocessing_is_applied_as_keras_does(mode):
    import tensorflow as tf

    from tfxfer.data.pipeline import Normalization, centre_crops

    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    got = centre_crops(tf.constant(pixels), input_size=8, resize_size=8, norm=Normalization.named(mode, pixels))
    want = keras.applications.imagenet_utils.preprocess_input(pixels.astype("float32"), mode=mode)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_the_report_reads_a_model_files_grid_over_its_cuts(tmp_path):
    import json

    from tfxfer.report import write_report
    from tfxfer.report.analysis import Grid, table1
    from tfxfer.runs.records import RESULT_FIELDS

    cuts = ["stem", "add", "conv2", "fc", "gap"]
    for seed in (0, 1):
        for treatment, n, top1 in [("baseB", 0, 0.5)] + [(t, k, 0.5 + d * k) for t, d in
                                                        (("AnB", -0.02), ("AnB+", 0.01), ("random", -0.05))
                                                        for k in range(1, 6)]:
            r = {f: None for f in RESULT_FIELDS}
            r.update(run_id=f"{treatment}{n or ''}-{seed}", treatment=treatment, n=n, split="dissimilar",
                     split_hash="h", classes=["x", "y"], seed=seed, top1=top1 + 0.01 * seed, top5=1.0,
                     dataset="cifar10", arch="file:m.keras", config={}, cut=cuts[n - 1] if n else "gap",
                     base_model_sha256="abc")
            (tmp_path / r["run_id"]).mkdir()
            (tmp_path / r["run_id"] / "result.json").write_text(json.dumps(r))
    grid = Grid([json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")])
    assert grid.n_max == 5 and grid.cuts[2] == "add"
    # The paper's ranges 1-7, 3-7, 5-7 become 1-5, 1-5 (deduplicated), 3-5 over five cuts.
    rows = table1(grid)
    assert [r["layers"] for r in rows] == ["1-5", "3-5"]
    assert rows[0]["over_base"].mean == pytest.approx(0.03)  # AnB+ − baseB, mean of 0.01 k over k = 1..5
    names = {p.name for p in write_report(tmp_path)}
    assert {"figure2.png", "figure3.png", "report.md"} <= names
    md = (tmp_path / "report.md").read_text()
    assert "n is cut k, 1 = stem, 2 = add" in md and "| cut 5 (gap) |" in md and "| cuts aggregated |" in md


def test_a_model_of_any_input_size_is_fixed_at_the_configs(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c2")(x))
    model.get_layer("bn").moving_mean.assign(np.full(4, 0.3, np.float32))
    model.save(tmp_path / "any.keras")
    with pytest.raises(UserError, match="give base_model.input_size"):
        resolve_base_model(tiny_config(tmp_path, base_model={"path": str(tmp_path / "any.keras")}))
    config = resolve_base_model(tiny_config(tmp_path, base_model={"path": str(tmp_path / "any.keras"),
                                                                       "input_size": SIZE}))
    assert config.base_model.cuts == ["bn", "c2"]  # 8x8 then 4x4
    net = build(config, "AnB", 1, 3)
    x = images()
    want = keras.Model(model.inputs, model.get_layer("bn").output)(x)
    np.testing.assert_allclose(net.get_layer(external.TRUNK)(x), want, atol=1e-6)


def test_a_model_file_run_resumes_from_its_checkpoint_as_if_uninterrupted(tmp_path, model_file, capsys):
    import tensorflow as tf

    config = byon_config(tmp_path, model_file, cuts=["add"])
    config = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, epochs=2))
    spec = RunSpec("AnB+", 1, config)
    straight = run(spec, verbose=False)
    run_dir = tmp_path / "runs" / spec.run_id
    weights = [np.array(w) for w in load_run(run_dir).model.weights]
    # As if killed during epoch 2: no result, the newest checkpoint the one of epoch 1.
    (run_dir / "result.json").unlink()
    ckpts = run_dir / "checkpoints"
    tf.compat.v1.train.update_checkpoint_state(str(ckpts), str(ckpts / "ckpt-1"))
    capsys.readouterr()
    resumed = run(spec, verbose=False)
    assert f"{spec.run_id}: resuming after epoch 1 of 2" in capsys.readouterr().out
    assert resumed["epochs"] == 2 and resumed["top1"] == straight["top1"]
    again = [np.array(w) for w in load_run(run_dir).model.weights]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(weights, again))


# --- analyses of a model-file run (score, probe, similarity; those that read conv1..fc8 refuse it) --

def file_features(config, cut, finished, x):
    """The base file's own layers up to `cut` (a frozen AnB keeps them as saved) on the run's inputs, pooled."""
    base = external.truncate(external.load_base_model(config.base_model), cut)
    return np.mean(base(finished.inputs(x), training=False), axis=(1, 2))


def test_score_of_a_model_file_run_reads_its_cuts_head_and_logits(trained, tmp_path, capsys):
    from tfxfer.probes.targets import resolve_target
    from tfxfer.scores.metrics import get_metric
    from tfxfer.scores.score import read_scores, softmax

    config, records = trained
    run_dir = Path(config.out) / records["AnB"]["run_id"]
    code, out, err = cli(capsys, "score", run_dir, "--dataset", "B", "--metric", "hscore,leep", "--quiet",
                         "--out", tmp_path / "score")
    assert code == 0, err
    rows = {(r["metric"], r["layer"]): r for r in read_scores(tmp_path / "score" / "score.csv")}
    # Its layers: the cuts its copied layers reach (1 block/bn, 2 add), the head, LEEP on the logits.
    assert sorted(rows) == sorted([("hscore", "block/bn"), ("hscore", "add"), ("hscore", "head1"),
                                   ("leep", "logits")])
    assert [rows["hscore", n]["layer_index"] for n in ("block/bn", "add", "head1")] == [1, 2, 3]
    assert rows["leep", "logits"]["layer_index"] == 4 and rows["hscore", "head1"]["dim"] == 8
    finished = load_run(run_dir)
    target = resolve_target(finished, "B")
    x, y = target.train_x, target.train_y  # fewer than --max-images: all of them
    for cut in ("block/bn", "add"):
        want = get_metric("hscore")(file_features(config, cut, finished, x), y)
        assert rows["hscore", cut]["score"] == pytest.approx(want, rel=1e-4)
    want = get_metric("leep")(softmax(finished.model(finished.inputs(x), training=False)), y)
    assert rows["leep", "logits"]["score"] == pytest.approx(want, rel=1e-4)
    assert "| metric | 1 block/bn | 2 add | 3 head1 | 4 logits |" in (tmp_path / "score" / "score.md").read_text()
    code, _, err = cli(capsys, "score", run_dir, "--layers", "conv1", "--out", tmp_path / "bad")
    assert code == 2 and "allowed: one or more of block/bn, add, head1" in err and not (tmp_path / "bad").exists()


def test_probe_of_a_model_file_run_over_its_cuts(trained, tmp_path):
    from tfxfer.probes import probe
    from tfxfer.probes.linear import probe_accuracy
    from tfxfer.probes.targets import draw_fold, fold_seed, resolve_target

    config, records = trained
    run_dir = Path(config.out) / records["AnB"]["run_id"]
    probe(run_dir, dataset="A", classifiers=["softmax"], per_class=[2], folds=1, view="avg", verbose=False,
          out=tmp_path / "probe")
    import csv

    rows = {r["layer"]: r for r in csv.DictReader(open(tmp_path / "probe" / "probe.csv"))}
    assert list(rows) == ["block/bn", "add", "head1"]
    assert [rows[n]["layer_index"] for n in rows] == ["1", "2", "3"] and rows["add"]["dim"] == "6"
    finished = load_run(run_dir)
    target = resolve_target(finished, "A")
    fold = draw_fold(target, 2, fold_seed(0, 0), 0, 50)
    (train_x, train_y), (test_x, test_y) = target.images("train"), target.images("test")
    acc, _ = probe_accuracy("softmax", file_features(config, "add", finished, train_x[fold.train]),
                            train_y[fold.train], file_features(config, "add", finished, test_x[fold.test]),
                            test_y[fold.test], len(target.class_names), fold.seed)
    assert float(rows["add"]["accuracy"]) == pytest.approx(acc, abs=1e-5)
    assert "| softmax (2) add |" in (tmp_path / "probe" / "probe.md").read_text()


@pytest.mark.parametrize("args", [
    ["visualize", "filters", "{run}"],
    ["visualize", "deconv", "{run}"], ["probe", "{run}", "--scratch"],
    ["diagnose", "correspondence", "{run}", "--images", "{dir}", "--parts", "{dir}/parts.yaml"],
])
def test_commands_that_read_conv1_to_fc8_refuse_a_model_file_run_in_one_line(args, trained, tmp_path, capsys):
    from PIL import Image

    config, records = trained
    run_dir = Path(config.out) / records["AnB"]["run_id"]
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "parts.yaml").write_text("x.png: {eye: [0, 0, 4, 4]}\ny.png: {eye: [1, 1, 5, 5]}\n")
    code, _, err = cli(capsys, *[a.format(run=run_dir, image=tmp_path / "x.png", dir=tmp_path) for a in args],
                       "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tfxfer: error: "), err
    assert "model file small.keras" in lines[0] or "--scratch" in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (run_dir / "diagnose").exists()


def test_similarity_of_model_file_runs_over_their_own_layers_and_the_files_grid(trained, tmp_path):
    import csv

    from tfxfer.probes import similarity
    from tfxfer.probes.cka import cka
    from tfxfer.probes.similarity import grid_pairs

    config, records = trained
    out = Path(config.out)
    run_dir = out / records["AnB"]["run_id"]
    # Full batch (one minibatch of all the images): the estimate is plain unbiased-HSIC CKA.
    written = similarity([run_dir, run_dir], view="avg", batch_size=4096, verbose=False, out=tmp_path / "self")
    rows = {(r["layer_x"], r["layer_y"]): float(r["cka"]) for r in csv.DictReader(open(written["csv"]))}
    names = ["block/bn", "add", "head1", "logits"]
    assert sorted(rows) == sorted((a, b) for a in names for b in names)
    np.testing.assert_allclose([rows[n, n] for n in names], 1.0, atol=1e-5)
    finished = load_run(run_dir)
    x, _ = finished.test_images(config.dataset.name, config.dataset.path, 5000, 0)  # the images it reads
    want = cka(file_features(config, "block/bn", finished, x), file_features(config, "add", finished, x))
    assert rows["block/bn", "add"] == pytest.approx(want, abs=1e-5)
    # The file's grid: its baseB (every cut) paired with each transferred run, diagonal over shared names.
    base = out / run(RunSpec("baseB", 0, config), verbose=False)["run_id"]
    transferred = sorted(out / r["run_id"] for r in records.values())
    assert grid_pairs(out) == [(base, r) for r in transferred]
    md = similarity([out], view="avg", max_images=16, verbose=False, out=tmp_path / "grid")["md"].read_text()
    assert "| pair | block/bn | add | head1 | logits |" in md
    assert all(f"| {base.name} vs {r.name} | " in md for r in transferred)


def test_diagnose_filters_reads_the_first_rgb_conv_of_a_model_file_run(trained, tmp_path, capsys):
    import csv
    import types

    from tfxfer.diagnose.filters import first_conv, rms

    config, records = trained
    run_dir = Path(config.out) / records["AnB"]["run_id"]
    code, out, err = cli(capsys, "diagnose", "filters", run_dir, "--out", tmp_path / "diag")
    assert code == 0, err
    assert f"{records['AnB']['run_id']} (file:small.keras stem, 6 filters 3x3): dead 0" in out
    rows = list(csv.DictReader(open(tmp_path / "diag" / records["AnB"]["run_id"] / "filters.csv")))
    finished = load_run(run_dir)
    base = external.load_base_model(config.base_model)
    kernel = np.asarray(base.get_layer("stem").kernel)  # frozen: the file's own filters
    assert len(rows) == 6
    np.testing.assert_allclose(sorted(float(r["rms"]) for r in rows), sorted(rms(kernel)), rtol=1e-4)
    # The activation test: each filter's mean ReLU output over the run's own task test images.
    x, _ = finished.test_images()
    want = np.maximum(np.asarray(base.get_layer("stem")(finished.inputs(x))), 0).mean(axis=(0, 1, 2))
    got = {int(r["filter"]): float(r["mean_activation"]) for r in rows}
    np.testing.assert_allclose([got[i] for i in range(6)], want, rtol=1e-4)
    # A base with no Conv2D on the RGB input: one line naming why.
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(inputs)  # 6 channels on
    keras.Model(inputs, keras.layers.Conv2D(4, 1, name="pw")(x)).save(tmp_path / "dw.keras")
    cfg = resolve_base_model(tiny_config(tmp_path, base_model={"path": str(tmp_path / "dw.keras"), "cuts": ["pw"]}))
    net = build(cfg, "AnB", 1, 3)
    with pytest.raises(UserError, match=r"a Conv2D on the RGB input \(kernel \[k, k, 3, F\]\); r1's copied "
                                        r"layers of file:dw.keras have none"):
        first_conv(types.SimpleNamespace(model=net, run_id="r1", record={"arch": "file:dw.keras"}))


def test_occlusion_and_invariance_of_a_model_file_run_follow_its_cuts(trained, tmp_path):
    import types

    from tfxfer.visualize.invariance import Ranges, invariance_curves
    from tfxfer.visualize.occlusion import feature_layer, occlusion_maps

    config, records = trained
    finished = load_run(Path(config.out) / records["AnB"]["run_id"], float32=True)
    x = finished.inputs(np.random.default_rng(2).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8))
    # Occlusion follows the deepest feature map among its cuts (add, 16x16x6) instead of conv5.
    assert feature_layer(finished) == "add"
    maps = occlusion_maps(finished, x[0], None, size=4, stride=4, batch_size=64)
    base = external.truncate(external.load_base_model(config.base_model), "add")
    want = np.asarray(base(x[:1], training=False))[0]
    assert maps.feature_map == int(np.argmax(want.max(axis=(0, 1)))) and maps.activation.shape == (4, 4)
    assert maps.unoccluded_activation == pytest.approx(want[..., maps.feature_map].sum(), rel=1e-4)
    with pytest.raises(UserError, match="r1's cuts fc are all vectors"):
        feature_layer(types.SimpleNamespace(from_file=True, run_id="r1", cuts=("fc",),
                                            output=lambda n: np.zeros((1, 8))))
    # Invariance follows its first and last feature layers (block/bn, head1) instead of conv1 and fc7.
    amounts, curves = invariance_curves(finished, x, [None, None], Ranges(steps=3), batch_size=64)
    assert set(curves["rotate"]) == {"block/bn", "head1", "probability"}
    zero = list(amounts["rotate"]).index(0.0)
    assert curves["rotate"]["block/bn"].shape == (2, 3)
    np.testing.assert_allclose(curves["rotate"]["block/bn"][:, zero], 0, atol=1e-4)
    assert (curves["translate"]["head1"] >= 0).all() and curves["scale"]["block/bn"].max() > 0
