"""tfxfer visualize: deconvnet switches and projections, occlusion, invariance, filters, and the CLI.

One tiny net is trained once on a folder dataset whose class lives in one known region: a
coloured square (red, blue, ...) at rows/cols SQUARE of a noise image, or no square ("plain").
"""
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from tfxfer.cli import main
from tfxfer.errors import UserError
from tfxfer.experiments.runner import run
from tfxfer.runs.finished import load_run
from tfxfer.runs.spec import RunSpec
from tfxfer.visualize import deconv
from tfxfer.visualize.filters import logged_kernels
from tfxfer.visualize.inputs import open_images
from tfxfer.visualize.invariance import (
    Ranges,
    invariance_curves,
    transform_vector,
    transformed_copies,
)
from tfxfer.visualize.occlusion import occlusion_maps

COLOURS = {"blue": (40, 60, 230), "green": (40, 200, 60), "plain": None, "red": (230, 40, 40),
           "yellow": (230, 220, 40)}
SQUARE = (4, 14)  # rows and columns [4, 14): the only place a class shows
EPOCHS = 6


def write_marked_folder(root: Path, per_class=(80, 10), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for part, n in zip(("train", "test"), per_class):
        for name, colour in COLOURS.items():
            d = root / part / name
            d.mkdir(parents=True)
            for i in range(n):
                x = rng.integers(70, 186, (32, 32, 3)).astype(np.uint8)
                if colour is not None:
                    x[SQUARE[0]:SQUARE[1], SQUARE[0]:SQUARE[1]] = colour
                Image.fromarray(x).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, the folder dataset) of a tiny baseB net on classes blue, plain, red."""
    tmp = tmp_path_factory.mktemp("visualize")
    data = write_marked_folder(tmp / "marked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFXFER_CACHE", str(tmp / "cache"))
        config = tiny_config(tmp, dataset={"name": f"folder:{data}", "train_per_class": None,
                                           "test_per_class": None, "val_fraction": 0.2},
                             split={"kind": "explicit", "A": ["green", "yellow"]}, recipe={"epochs": EPOCHS})
        record = run(RunSpec("baseB", None, config), verbose=False)
    assert record["classes"] == ["blue", "plain", "red"] and record["top1"] == 1.0, record
    return tmp / "runs" / record["run_id"], data


@pytest.fixture(scope="module")
def finished(trained):
    return load_run(trained[0], float32=True)


# --- deconvnet -----------------------------------------------------------------------------------


def test_unpool_puts_each_value_back_at_its_recorded_maximum():
    x = np.array([[1, 9, 2, 0],
                  [3, 4, 8, 5],
                  [0, 6, 1, 2],
                  [7, 2, 3, 4]], np.float32)[None, :, :, None]
    pooled, switches = deconv.max_pool_with_switches(x, keras.layers.MaxPooling2D(2, 2))
    assert pooled.numpy()[0, :, :, 0].tolist() == [[9, 8], [7, 4]]
    up = deconv.unpool(pooled, switches, x.shape).numpy()[0, :, :, 0]
    expected = np.zeros((4, 4), np.float32)
    expected[0, 1], expected[1, 2], expected[3, 0], expected[3, 3] = 9, 8, 7, 4
    np.testing.assert_array_equal(up, expected)

    # Overlapping 3x3/2 "same" pooling over two images and two channels: 9 is the maximum of all
    # four regions of image 0, channel 0, so unpooling adds its four copies at that one place.
    x = np.zeros((2, 4, 4, 2), np.float32)
    x[0, 2, 2, 0], x[1, 0, 3, 1], x[1, 3, 0, 1] = 9, 5, 6
    pooled, switches = deconv.max_pool_with_switches(x, keras.layers.MaxPooling2D(3, 2, padding="same"))
    up = deconv.unpool(pooled, switches, x.shape).numpy()
    assert up[0, 2, 2, 0] == 36 and up[1, 0, 3, 1] == 5 and up[1, 3, 0, 1] == 6
    assert np.count_nonzero(up) == 3


def test_projection_of_one_conv1_activation_is_its_filter_at_the_switch(trained, finished):
    model = finished.model
    xs, _, _ = open_images(finished, sorted((trained[1] / "test").glob("*/00[01].png")))
    out, traces = deconv.forward(model, xs, "conv1")
    block = model.get_layer("conv1")
    kernel = block.conv.kernel.numpy()  # [5, 5, 3, F]
    half = kernel.shape[0] // 2
    conv = block.conv(xs).numpy()  # before pooling: [N, 32, 32, F]
    rng = np.random.default_rng(0)
    checked = 0
    for b in range(len(xs)):
        f = int(rng.integers(kernel.shape[-1]))
        i, j = (int(v) for v in rng.integers(out.shape[1], size=2))
        value = float(out[b, i, j, f])
        if value <= 0:
            continue
        # The switch, found independently: the maximum of pooling window (3x3, stride 2, "same"
        # on an even side pads only after) in the conv output.
        window = conv[b, 2 * i:2 * i + 3, 2 * j:2 * j + 3, f]
        y, x = np.unravel_index(np.argmax(window), window.shape)
        y, x = 2 * i + y, 2 * j + x
        # The filter with its top-left tap at (y - half, x - half), cut to the image.
        padded = np.zeros((32 + 2 * half, 32 + 2 * half, 3), np.float32)
        padded[y:y + 2 * half + 1, x:x + 2 * half + 1] = value * kernel[..., f]
        # Every image of the batch keeps its own (i, j, f); each must project through its own switches.
        n = len(xs)
        top = deconv.one_activation(out, np.full(n, i, np.int32), np.full(n, j, np.int32), np.full(n, f, np.int32))
        projection = deconv.project(top, traces).numpy()[b]
        np.testing.assert_allclose(projection, padded[half:-half, half:-half], atol=1e-5)
        checked += 1
    assert checked >= 3


def test_forward_matches_the_network_and_projections_stay_in_the_receptive_field(finished):
    model = finished.model
    xs = finished.inputs(np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    for layer in ("conv1", "conv3", "conv5"):
        out, traces = deconv.forward(model, xs, layer)
        np.testing.assert_allclose(out, keras.Model(model.input, model.get_layer(layer).output)(xs), atol=1e-5)
    # cifar8: 5x5 conv, 3x3/2 pool; 5x5 conv, 3x3/2 pool; 3x3 conv.
    assert deconv.receptive_field(deconv.forward(model, xs, "conv1")[1]) == deconv.ReceptiveField(-2, 2, 7)
    out, traces = deconv.forward(model, xs, "conv3")
    field = deconv.receptive_field(traces)
    assert field == deconv.ReceptiveField(-10, 4, 27)
    f = int(np.argmax(out.numpy().max(axis=(0, 1, 2))))
    rows, cols = np.array([1, 4, 7], np.int32), np.array([6, 3, 0], np.int32)
    projection = np.abs(deconv.project(deconv.one_activation(out, rows, cols, np.full(3, f, np.int32)),
                                       traces).numpy()).sum(-1)
    for b in range(3):
        inside = np.zeros((32, 32), bool)
        lo_r, lo_c = field.start + rows[b] * field.jump, field.start + cols[b] * field.jump
        inside[max(lo_r, 0):lo_r + field.size, max(lo_c, 0):lo_c + field.size] = True
        assert projection[b][~inside].max() == 0
        assert projection[b][inside].max() > 0 or out[b, rows[b], cols[b], f] == 0


def test_top_activations_are_each_maps_strongest_over_the_dataset(finished):
    model = finished.model
    xs = finished.inputs(np.random.default_rng(2).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    maps = np.array([0, 3, 5])
    top = deconv.top_activations(model, tf.data.Dataset.from_tensor_slices(xs).batch(7), "conv2", maps, 4)
    a = keras.Model(model.input, model.get_layer("conv2").output)(xs).numpy()[..., maps]
    per_image = a.max(axis=(1, 2)).T  # [maps, images]
    np.testing.assert_allclose(top.values, -np.sort(-per_image, axis=1)[:, :4], rtol=1e-5)
    for m in range(len(maps)):
        for j in range(4):
            assert a[top.images[m, j], top.rows[m, j], top.cols[m, j], m] == pytest.approx(top.values[m, j])


# --- occlusion, invariance, filters -----------------------------------------------------------


def test_occlusion_drops_the_class_most_where_its_square_is(trained, finished):
    _, data = trained
    for name in ("red", "blue"):
        xs, _, labels = open_images(finished, [data / "test" / name / "000.png"])
        maps = occlusion_maps(finished, xs[0], labels[0], size=10, stride=2, batch_size=64)
        assert maps.label == finished.class_names.index(name) and maps.unoccluded_probability > 0.9
        i, j = np.unravel_index(np.argmin(maps.probability), maps.probability.shape)
        centre = (2 * i + 1, 2 * j + 1)  # stride 2: cell i is the square centred at pixel 2i + 1
        assert SQUARE[0] <= centre[0] < SQUARE[1] and SQUARE[0] <= centre[1] < SQUARE[1]
        assert maps.probability.min() < 0.5
        # Covering only noise, far from the square, changes nothing.
        assert maps.probability[8:, 8:].min() > 0.9
        assert maps.top_label[i, j] == finished.class_names.index("plain")
        assert maps.top_label[8:, 8:].tolist() == [[labels[0]] * 8] * 8


def test_invariance_transforms_and_distances(trained, finished):
    data = trained[1]
    x = np.arange(8 * 8 * 3, dtype=np.float32).reshape(1, 8, 8, 3)
    vectors = np.stack([transform_vector("translate", 3, 8), transform_vector("scale", 1.0, 8),
                        transform_vector("rotate", 0.0, 8), transform_vector("rotate", 360.0, 8)])
    moved, *same = list(transformed_copies(x, np.zeros(4, np.int32), vectors).as_numpy_iterator())
    np.testing.assert_allclose(moved[3:], x[0, :5], atol=1e-4)  # down 3 pixels, new rows 0
    np.testing.assert_array_equal(moved[:3], 0)
    for copy in same:
        np.testing.assert_allclose(copy, x[0], atol=1e-3)

    xs, _, labels = open_images(finished, [data / "test" / "red" / "000.png", data / "test" / "red" / "001.png"])
    amounts, curves = invariance_curves(finished, xs, labels, Ranges(steps=4), batch_size=5)
    assert 0.0 in amounts["translate"] and 1.0 in amounts["scale"] and 0.0 in amounts["rotate"]
    identity = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
    for kind, curve in curves.items():
        k = list(amounts[kind]).index(identity[kind])
        for layer in ("conv1", "fc7"):
            assert curve[layer].shape == (2, len(amounts[kind]))
            np.testing.assert_allclose(curve[layer][:, k], 0, atol=1e-3)
            assert curve[layer].max() > 0
        assert (curve["probability"][:, k] > 0.9).all()


def test_filter_evolution_comes_from_the_logged_kernels(trained, finished, tmp_path):
    kernels = logged_kernels(trained[0])
    assert list(kernels) == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(kernels[EPOCHS], finished.model.get_layer("conv1").get_weights()[0])
    assert not np.allclose(kernels[1], kernels[EPOCHS])
    (tmp_path / "tb").mkdir()
    with pytest.raises(UserError, match="conv1/kernel"):
        logged_kernels(tmp_path)


# --- the command line ----------------------------------------------------------------------------


def tfxfer(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_every_command_writes_a_png_and_logs_it_to_tensorboard(trained, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import (
        TENSORS,
        EventAccumulator,
    )

    run_dir, data = trained
    images = [data / "test" / "red" / "000.png", data / "test" / "blue" / "001.png"]
    commands = {
        "filters": ["filters", run_dir],
        "filters_epochs": ["filters", run_dir, "--epochs"],
        "occlusion": ["occlusion", run_dir, *images, "--size", 8, "--stride", 4, "--batch-size", 32],
        "deconv_conv1": ["deconv", run_dir, "--layer", "conv1", "--layer", "conv4", "--maps", 3, "--top", 4,
                         "--batch-size", 16],
        "invariance": ["invariance", run_dir, *images, "--steps", 5, "--batch-size", 16],
    }
    for name, args in commands.items():
        code, out, err = tfxfer(capsys, "visualize", *args, "--out", tmp_path, "--tensorboard")
        assert code == 0, err
        png = tmp_path / f"{name}.png"
        assert str(png) in out.splitlines()
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (tmp_path / "deconv_conv4.png").stat().st_size > 5000
    # Another dataset's test images, a seeded subset of them.
    code, out, err = tfxfer(capsys, "visualize", "deconv", run_dir, "--layer", "conv2", "--maps", 2, "--top", 3,
                            "--dataset", f"folder:{data}", "--max-images", 12, "--out", tmp_path / "other")
    assert code == 0 and (tmp_path / "other" / "deconv_conv2.png").stat().st_size > 5000, err
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={TENSORS: 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])  # TF2 writes images as tensor summaries
    assert {f"visualize/{n}" for n in [*commands, "deconv_conv4"]} <= tags
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("case", ["missing image", "unreadable image", "unknown layer", "fc layer",
                                  "not a run", "bad size", "unknown label", "data path alone"])
def test_bad_inputs_are_one_line_errors_and_write_nothing(trained, tmp_path, capsys, case):
    run_dir, data = trained
    image = data / "test" / "red" / "000.png"
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    out = tmp_path / "figures"
    args, needle = {
        "missing image": (["occlusion", run_dir, image, tmp_path / "nope.jpg"], "nope.jpg"),
        "unreadable image": (["invariance", run_dir, garbage], "garbage.png"),
        "unknown layer": (["deconv", run_dir, "--layer", "conv9"], "conv9"),
        "fc layer": (["deconv", run_dir, "--layer", "fc6"], "fc6"),
        "not a run": (["filters", tmp_path], "result.json"),
        "bad size": (["occlusion", run_dir, image, "--size", 0], "size 0"),
        "unknown label": (["occlusion", run_dir, image, "--label", "zebra"], "zebra"),
        "data path alone": (["deconv", run_dir, "--data-path", tmp_path], "--dataset"),
    }[case]
    code, _, err = tfxfer(capsys, "visualize", *args, "--out", out)
    assert code == 2
    assert err.startswith("tfxfer: error: ") and err.count("\n") == 1 and needle in err, err
    assert not out.exists()
