"""Speed work that must not change results: frozen-prefix caching, fixed views, no retracing."""
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from tfxfer.data.pipeline import (Normalization, Views, fixed_views, make_dataset, make_feature_dataset, preprocess,
                                  preprocess_views)
from tfxfer.data.tasks import load_data, task_data
from tfxfer.experiments.runner import run
from tfxfer.models import LAYER_NAMES, build_model, get_arch
from tfxfer.runs.finished import load_run
from tfxfer.runs.spec import RunSpec
from tfxfer.training import prefix_cache
from tfxfer.training.loop import evaluate, inference, suffix_model
from tfxfer.treatments import build_treatment

SPEC = get_arch("cifar8", 0.25)
NORM = Normalization((120.0, 110.0, 100.0), (60.0, 55.0, 50.0))
N = 3  # the frozen prefix of the runs below: conv1..conv3


def test_fixed_views_are_zeiler_fergus_ten_crops():
    views = fixed_views(input_size=32, resize_size=32, pad=4, crop=True, flip=True)
    assert len(views) == 10 and views.offsets == ((0, 0), (0, 8), (8, 0), (8, 8), (4, 4))
    assert len(fixed_views(input_size=32, resize_size=32, pad=0, crop=True, flip=False)) == 1  # no room to move
    assert fixed_views(input_size=227, resize_size=256).offsets == ((14, 14),)  # evaluation's centre crop
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = preprocess_views(images, views, input_size=32, resize_size=32, norm=NORM).numpy()
    assert x.shape == (3, 10, 32, 32, 3)
    for i, image in enumerate(images):
        # The padded image's centre is the image itself, exactly as evaluation preprocesses it.
        np.testing.assert_allclose(x[i, 4], preprocess(image, input_size=32, resize_size=32, norm=NORM), atol=1e-6)
        np.testing.assert_allclose(x[i, 9], x[i, 4, :, ::-1])  # the same view mirrored
        # The top-left corner shifts the image down and right by the padding, which is black.
        np.testing.assert_allclose(x[i, 0, 4:, 4:], x[i, 4, :-4, :-4], atol=1e-6)
        np.testing.assert_allclose(x[i, 0, :4, :, 0], -120.0 / 60.0, atol=1e-6)


def test_training_batches_are_seeded_crops_and_flips_of_each_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(24)
    # Every crop and flip training may draw with pad 2: 5 x 5 offsets, mirrored or not.
    every = preprocess_views(images, Views(2, tuple((t, s) for t in range(5) for s in range(5)), True),
                             input_size=32, resize_size=32, norm=NORM).numpy()

    def epoch(e, batch_size=8):
        ds = make_dataset(images, labels, input_size=32, resize_size=32, norm=NORM, batch_size=batch_size,
                          training=True, seed=5, epoch=e, pad=2, crop=True, flip=True)
        batches = list(ds.take(24 // batch_size))
        return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])

    x, y = epoch(0)
    assert sorted(y) == list(range(24))
    drawn = [int(np.argmin(np.abs(every[label] - crop).max(axis=(1, 2, 3)))) for crop, label in zip(x, y)]
    for crop, label, k in zip(x, y, drawn):
        np.testing.assert_array_equal(crop, every[label, k])  # exactly one of the possible crops
    assert len(set(drawn)) > 10  # and they vary
    again, y_again = epoch(0, batch_size=4)  # the same draws whatever the batch size
    np.testing.assert_array_equal(again, x)
    np.testing.assert_array_equal(y_again, y)
    assert not np.array_equal(epoch(1)[1], y)  # a new epoch, a new order
    few = make_dataset(images[:3], labels[:3], input_size=32, resize_size=32, norm=NORM, batch_size=4,
                       training=True, pad=2, crop=True, flip=True)
    assert next(iter(few))[0].shape == (4, 32, 32, 3)  # fewer images than a batch still make one


def test_feature_epochs_draw_one_view_per_image_reproducibly():
    n_images, n_views = 40, 10
    # Each row says which (image, view) it is, so the draw can be read back from the batches.
    features = np.stack(np.meshgrid(np.arange(n_images), np.arange(n_views), indexing="ij"), -1).astype(np.float16)
    labels = np.arange(n_images)

    def epoch(e, shard=(1, 0)):
        ds = make_feature_dataset(features, labels, batch_size=4, seed=3, epoch=e, shard=shard)
        rows = np.concatenate([x.numpy() for x, _ in ds.take(n_images // shard[0] // 4)])
        ys = np.concatenate([y.numpy() for _, y in ds.take(n_images // shard[0] // 4)])
        np.testing.assert_array_equal(rows[:, 0], ys)  # labels travel with their image
        return rows

    first = epoch(0)
    assert sorted(first[:, 0]) == list(range(n_images))  # every image once per epoch
    np.testing.assert_array_equal(first, epoch(0))  # same seed and epoch: same order and views
    second = epoch(1)
    assert not np.array_equal(first[:, 0], second[:, 0])  # reshuffled
    views = {int(v) for v in np.concatenate([first[:, 1], second[:, 1], epoch(2)[:, 1]])}
    assert len(views) >= 8, views  # the views are drawn, not fixed
    halves = [set(epoch(0, (2, i))[:, 0]) for i in (0, 1)]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == n_images  # replicas split the images


def test_random_prefix_is_the_same_for_every_n():
    models = {n: build_treatment("random", n, SPEC, 5, seed=4) for n in (2, 5)}
    for layer in LAYER_NAMES[:2]:
        for a, b in zip(models[2].get_layer(layer).get_weights(), models[5].get_layer(layer).get_weights()):
            np.testing.assert_array_equal(a, b)
    # Re-initialized layers still differ by n.
    assert not np.array_equal(models[2].get_layer("fc7").get_weights()[0], models[5].get_layer("fc7").get_weights()[0])


def test_cached_fc7_outputs_are_dropped_out_in_training():
    model = build_model(SPEC, 5, dropout=0.5, seed=1)
    top = suffix_model(model, 7)  # fc7's dropout, then fc8
    x = np.abs(np.random.default_rng(1).normal(size=(1, 64))).astype(np.float16)
    inference_out = top(x, training=False).numpy()
    draws = np.stack([top(x, training=True).numpy() for _ in range(600)])
    assert np.abs(draws - inference_out).max() > 0.1  # dropout acts on the cached features ...
    # ... as inverted dropout: on average fc8 (linear) sees what inference sees.
    np.testing.assert_allclose(draws.mean(0), inference_out, atol=0.2 * np.abs(draws).std())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """baseB, then BnB at n = 3 with and without the prefix cache, then BnB at n = 4 cached."""
    tmp = tmp_path_factory.mktemp("perf")
    recipe = {"epochs": 6}
    cfg = tiny_config(tmp, recipe=recipe)
    out = {"base": run(RunSpec("baseB", 0, cfg), verbose=False)}
    out[True] = run(RunSpec("BnB", N, cfg), verbose=False)
    out["n4"] = run(RunSpec("BnB", N + 1, cfg), verbose=False)
    # The same run uncached, elsewhere (its run id is the same), copying the very same base.
    uncached = tiny_config(tmp / "uncached", recipe=recipe, training={"prefix_cache": False})
    shutil.copytree(tmp / "runs" / out["base"]["run_id"], Path(uncached.out) / out["base"]["run_id"])
    out[False] = run(RunSpec("BnB", N, uncached), verbose=False)
    out["uncached_dir"] = Path(uncached.out)
    return tmp / "runs", cfg, out


def entries(out_dir):
    return {p.name: json.loads((p / prefix_cache.META_FILE).read_text())
            for p in prefix_cache.cache_dir(out_dir).iterdir()}


def test_cache_entries_are_shared_and_built_from_the_layer_below(runs):
    out_dir, _, _ = runs
    built = {(m["layer"], m["images"], len(m["views"]["offsets"]) * (2 if m["views"]["flip"] else 1)): m
             for m in entries(out_dir).values()}
    base = next(r for r in out_dir.iterdir() if r.name.startswith("baseB"))
    # Training views (5 crops, no flips in the tiny recipe) and the validation images' centre view.
    assert set(built) == {("conv3", 576, 5), ("conv3", 144, 1), ("conv4", 576, 5), ("conv4", 144, 1)}
    assert {m["label"] for m in built.values()} == {base.name}
    assert built["conv3", 576, 5]["built_from"] == "images"
    assert built["conv4", 576, 5]["built_from"] == "conv3"  # BnB4 reused BnB3's entry
    assert not [p for p in prefix_cache.cache_dir(out_dir).iterdir() if p.name.startswith(".")]  # no scratch left


def test_cached_activations_equal_the_live_network(runs):
    out_dir, cfg, records = runs
    task = task_data(cfg, *load_data(cfg), task="B")
    views = fixed_views(input_size=32, resize_size=32, pad=2, crop=True, flip=False)
    model = load_run(out_dir / records["base"]["run_id"]).model  # BnB3's and BnB4's prefixes are its own
    for n in (N, N + 1):  # conv4's entry was computed from conv3's float16 entry
        cached, note = prefix_cache.prefix_outputs(model, n, task.train_x, views, spec=SPEC, norm=task.norm,
                                                   root=prefix_cache.cache_dir(out_dir))
        assert note["built_from"] is None  # read back, not recomputed
        assert isinstance(cached, np.memmap) and cached.dtype == np.float16
        prefix = keras.Model(model.input, model.get_layer(LAYER_NAMES[n - 1]).output)
        images = preprocess_views(task.train_x[:64], views, input_size=32, resize_size=32, norm=task.norm)
        live = prefix(tf.reshape(images, (-1, 32, 32, 3)), training=False).numpy()
        live = live.reshape(64, len(views), *live.shape[1:])
        scale = np.abs(live).max()
        assert scale > 0.1
        assert np.abs(cached[:64].astype(np.float32) - live).max() <= 2e-3 * scale  # float16 rounding


def test_cached_frozen_run_matches_an_uncached_one(runs):
    out_dir, _, records = runs
    base = load_run(out_dir / records["base"]["run_id"]).model
    chance = 1 / len(records["base"]["classes"])
    for cache in (True, False):
        model = load_run((out_dir if cache else records["uncached_dir"]) / records[cache]["run_id"]).model
        for layer in LAYER_NAMES[:N]:  # the frozen prefix is exactly the base's
            for a, b in zip(model.get_layer(layer).get_weights(), base.get_layer(layer).get_weights()):
                np.testing.assert_array_equal(a, b)
        for layer in LAYER_NAMES[N:]:
            assert not np.array_equal(model.get_layer(layer).get_weights()[0], base.get_layer(layer).get_weights()[0])
        assert records[cache]["top1"] > 2 * chance, (cache, records[cache]["top1"])
    assert records[True]["run_id"] == records[False]["run_id"]  # the cache is how, not what, a run computes
    # Same seed, same recipe: within the noise of a 240-image test set and of the augmentation draw.
    assert abs(records[True]["top1"] - records[False]["top1"]) < 0.1, (records[True]["top1"], records[False]["top1"])


def test_validation_on_cached_features_is_the_full_network_s(runs):
    out_dir, cfg, records = runs
    finished = load_run(out_dir / records[True]["run_id"])
    task = task_data(cfg, *load_data(cfg), task="B")
    history = json.loads((finished.run_dir / "history.json").read_text())
    full = evaluate(inference(finished.model), task.val_x, task.val_y, task)
    # At most one borderline image may flip under the cache's float16 rounding.
    assert abs(full["top1"] - history[-1]["val_top1"]) <= 1 / len(task.val_y) + 1e-9


def test_train_function_is_traced_once_over_all_epochs(runs):
    out_dir, _, records = runs
    for key in (True, False, "base"):
        run_dir = (records["uncached_dir"] if key is False else out_dir) / records[key]["run_id"]
        history = json.loads((run_dir / "history.json").read_text())
        assert len(history) == 6
        assert [h["traces"] for h in history] == [1] * 6, (key, history)
    cached = json.loads((out_dir / records[True]["run_id"] / "history.json").read_text())
    assert cached[0]["prefix_cache_s"] > 0 and all(h["prefix_cache_s"] == 0 for h in cached[1:])


def test_cached_frozen_run_under_mirrored_strategy(tmp_path):
    """baseB and then BnB5 in one process under one MirroredStrategy (a second strategy's collectives
    clashed with the first's), with a constant learning rate (a mirrored variable when logged)."""
    from helpers import run_tfxfer, write_config
    from test_distributed import TWO_CPUS

    cfg = write_config(tmp_path / "c.yaml", tmp_path / "runs", recipe={"epochs": 2, "lr_step_epochs": 5},
                       training={"strategy": "mirrored", "devices": ["/cpu:0", "/cpu:1"]})
    res = run_tfxfer("train", "--config", cfg, "--treatment", "BnB", "--n", "5", "--quiet", prelude=TWO_CPUS)
    assert res.returncode == 0, res.stderr
    record = json.loads(next((tmp_path / "runs").glob("BnB5-*/result.json")).read_text())
    assert record["device"] == "2x cpu" and record["epochs"] == 2
    history = json.loads((tmp_path / "runs" / record["run_id"] / "history.json").read_text())
    assert history[0]["prefix_cache_s"] > 0 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert [h["lr"] for h in history] == [pytest.approx(0.002)] * 2


def test_cache_keeps_to_its_budget_by_evicting_the_least_recently_used(runs, tmp_path):
    out_dir, cfg, records = runs
    task = task_data(cfg, *load_data(cfg), task="B")
    views = fixed_views(input_size=32, resize_size=32, pad=2, crop=True, flip=False)
    model = load_run(out_dir / records["base"]["run_id"]).model
    root = tmp_path / "cache"

    def outputs(n, max_bytes=None):
        return prefix_cache.prefix_outputs(model, n, task.train_x, views, spec=SPEC, norm=task.norm, root=root,
                                           max_bytes=max_bytes)

    def held():
        return {p.name.split("-")[0]: (p / prefix_cache.FEATURES_FILE).stat().st_size for p in root.iterdir()}

    for n in (1, 2, 3):
        outputs(n)
    time.sleep(0.05)  # file times tick in milliseconds: make "used later" visible
    assert outputs(1)[1]["built_from"] is None  # read back: now the most recently used
    size = held()
    features, note = outputs(4, max_bytes=size["conv1"] + size["conv3"])
    assert note["built_from"] == "conv3"
    # conv2 and conv3 were used least recently; conv1 was read again; conv4 is the one in use.
    assert set(held()) == {"conv1", "conv4"} and held()["conv4"] == size["conv3"]
    assert features.shape[0] == len(task.train_x)
    outputs(5, max_bytes=0)  # the entry in use stays, whatever the budget
    assert set(held()) == {"conv5"}


def test_emulated_mixed_precision_is_warned_once(monkeypatch, caplog):
    from tfxfer.training import precision

    avx2 = frozenset({"avx", "avx2", "fma", "f16c"})
    sapphire = avx2 | {"avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16"}
    assert precision.emulated("mixed_bfloat16", avx2, gpus=0)
    assert precision.emulated("mixed_float16", avx2 | {"avx512_bf16"}, gpus=0)
    assert not precision.emulated("mixed_bfloat16", avx2 | {"avx512_bf16"}, gpus=0)
    assert not precision.emulated("mixed_bfloat16", avx2 | {"amx_bf16"}, gpus=0)
    assert not precision.emulated("mixed_float16", sapphire, gpus=0)
    assert not precision.emulated("float32", avx2, gpus=0)
    assert not precision.emulated("mixed_bfloat16", avx2, gpus=1)  # a GPU computes it
    assert not precision.emulated("mixed_bfloat16", None, gpus=0)  # flags unknown: no evidence, no warning

    monkeypatch.setattr(precision, "cpu_flags", lambda: avx2)
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level("WARNING", logger=precision.__name__):
        assert precision.warn_if_emulated("mixed_bfloat16")
        assert not precision.warn_if_emulated("mixed_bfloat16")  # once per process, not once per run
        assert not precision.warn_if_emulated("float32")
        assert precision.warn_if_emulated("mixed_float16")
    assert len(caplog.records) == 2
    bf16, fp16 = caplog.messages
    assert "mixed_bfloat16" in bf16 and "avx512_bf16 or amx_bf16" in bf16 and "12-20x" in bf16 and "float32" in bf16
    assert "mixed_float16" in fp16 and "avx512_fp16 or amx_fp16" in fp16 and "4x" in fp16
    assert "\n" not in bf16 + fp16


def test_a_run_preprocesses_an_array_in_chunks_exactly_as_image_by_image(monkeypatch):
    import dataclasses

    from tfxfer.runs import finished

    spec = dataclasses.replace(SPEC, resize_size=36)  # resized, then the centre crop
    run = finished.FinishedRun(Path("."), {}, None, spec, NORM, None)
    images = np.random.default_rng(3).integers(0, 256, (7, 40, 44, 3), dtype=np.uint8)
    monkeypatch.setattr(finished, "INPUT_CHUNK", 3)  # chunks of 3, 3 and 1
    batched = run.inputs(images)
    one_by_one = run.inputs(list(images))
    assert batched.shape == (7, 32, 32, 3) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(batched[4], preprocess(images[4], input_size=32, resize_size=36, norm=NORM), atol=1e-5)
