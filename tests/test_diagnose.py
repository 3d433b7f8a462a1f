"""tfxfer diagnose: conv1 filter health on filters of known frequency content, and the correspondence
measure on a tiny net trained on images whose class is a coloured square at a known place."""
import csv
import json

import numpy as np
import pytest
import yaml
from conftest import tiny_config
from test_visualize import SQUARE, write_marked_folder

from tfxfer.cli import main
from tfxfer.diagnose.correspondence import pair_distances, random_boxes, read_parts
from tfxfer.diagnose.filters import Thresholds, analyze_kernel, band_shares
from tfxfer.experiments.runner import run
from tfxfer.runs.spec import RunSpec

K = 8  # DFT bins at multiples of 1/8 cycle/pixel: 1/8 is low, 2/8 mid, 3/8 and 4/8 high
X = np.arange(K)[None, :].repeat(K, axis=0)  # column index
Y = X.T


def cosine(cycles, along=X):
    return np.cos(2 * np.pi * cycles * along / K)


def known_kernel() -> np.ndarray:
    """[8, 8, 3, 8] filters (the same on each channel) with known RMS and spectra."""
    filters = [
        np.full((K, K), 0.05),  # 0: flat (DC only): low, RMS 0.05
        0.2 * cosine(1),  # 1: 1/8 cycle/pixel: low, RMS 0.2/sqrt(2)
        0.2 * cosine(2),  # 2: 1/4: mid
        0.2 * cosine(3),  # 3: 3/8: high
        0.08 * (-1.0) ** (X + Y),  # 4: checkerboard, r = sqrt(2)/2: high, RMS 0.08
        0.2 * cosine(2) + 0.1 * cosine(3, Y),  # 5: energy 4:1, mid 0.8 and high 0.2
        np.zeros((K, K)),  # 6: dead (zero)
        1e-4 * cosine(2),  # 7: dead (tiny)
    ]
    return np.stack([np.stack([f] * 3, axis=-1) for f in filters], axis=-1).astype(np.float32)


def test_filter_health_of_known_filters_is_exact():
    health = analyze_kernel(known_kernel(), "r", "toy")
    expected = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0.8, 0.2]])
    np.testing.assert_allclose(health.shares[:6], expected, atol=1e-9)
    assert np.isnan(health.shares[6]).all()
    np.testing.assert_allclose(health.rms, [0.05, 0.2 / 2**0.5, 0.2 / 2**0.5, 0.2 / 2**0.5, 0.08,
                                            (0.02 + 0.005) ** 0.5, 0, 1e-4 / 2**0.5], rtol=1e-6)
    np.testing.assert_allclose(health.centroid[:6], [0, 1 / 8, 2 / 8, 3 / 8, 2**0.5 / 2, 0.8 * 2 / 8 + 0.2 * 3 / 8],
                               atol=1e-9)
    assert health.dead.tolist() == [False] * 6 + [True, True]
    assert health.above_radius.tolist() == [False, True, True, True, False, True, False, False]
    assert health.order().tolist() == [0, 1, 2, 5, 3, 4, 7, 6]  # low to high, dead last
    s = health.summary()
    assert (s["dead"], s["dominant_low"], s["dominant_mid"], s["dominant_high"], s["above_radius"]) == (2, 2, 2, 2, 4)
    assert s["mean_mid_share"] == pytest.approx(1.8 / 6)
    assert s["dead_by_activation"] == ""

    # The activation test adds a unit that never fires; a larger radius counts fewer above it.
    act = np.array([1.0, 2, 1, 1, 3, 1, 0, 1])
    act[3] = 0.001
    health = analyze_kernel(known_kernel(), "r", "toy", Thresholds(radius=0.15), act, "test images")
    assert health.dead.tolist() == [False, False, False, True, False, False, True, True]
    assert health.summary()["dead_by_activation"] == 2  # filters 3 and 6
    assert health.above_radius.tolist() == [False] * 5 + [True, False, False]
    assert "dead 3 (RMS < 0.1 x median: 2; mean activation < 0.01 x median over test images: 2)" in \
        health.summary_line()


def test_band_shares_sum_to_one_for_any_filter():
    kernel = np.random.default_rng(0).normal(size=(5, 5, 3, 16))
    np.testing.assert_allclose(band_shares(kernel).sum(axis=1), 1.0)


def test_pair_distances_count_sign_disagreements():
    eps = np.array([[1.0, -1, 0, 2], [1, 1, 0, -3], [-1, -1, 0, 0]])
    # pairs (0,1): 2 of 4 signs differ; (0,2): 2 of 4 (2 vs 0 differs); (1,2): 3 of 4
    np.testing.assert_allclose(pair_distances(eps), [0.5, 0.5, 0.75])


def test_random_boxes_keep_each_parts_size_and_stay_inside():
    parts_boxes = np.array([[[2, 3, 10, 7]], [[0, 0, 5, 5]]])
    images = [np.zeros((20, 30, 3), np.uint8), np.zeros((5, 6, 3), np.uint8)]
    from tfxfer.diagnose.correspondence import Parts

    boxes = random_boxes(Parts(["a", "b"], ["p"], parts_boxes), images, draws=50, seed=3)
    assert boxes.shape == (50, 2, 1, 4)
    np.testing.assert_array_equal(boxes[..., 2:] - boxes[..., :2], np.broadcast_to(parts_boxes[..., 2:] -
                                                                                   parts_boxes[..., :2], (50, 2, 1, 2)))
    assert (boxes[:, 0, 0, 2] <= 30).all() and (boxes[:, 0, 0, 3] <= 20).all() and (boxes >= 0).all()
    assert (boxes[:, 1, 0, 2] <= 6).all() and (boxes[:, 1, 0, 3] <= 5).all()
    assert len(set(map(tuple, boxes[:, 0, 0]))) > 10  # placed anywhere, not always in one spot
    np.testing.assert_array_equal(boxes, random_boxes(Parts(["a", "b"], ["p"], parts_boxes), images, 50, seed=3))


# --- on a trained net ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, images directory, parts file): a tiny baseB on blue/plain/red squares; five
    red test images with the square and two background regions boxed."""
    tmp = tmp_path_factory.mktemp("diagnose")
    data = write_marked_folder(tmp / "marked", per_class=(60, 5))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFXFER_CACHE", str(tmp / "cache"))
        config = tiny_config(tmp, dataset={"name": f"folder:{data}", "train_per_class": None,
                                           "test_per_class": None, "val_fraction": 0.2},
                             split={"kind": "explicit", "A": ["green", "yellow"]}, recipe={"epochs": 4})
        record = run(RunSpec("baseB", None, config), verbose=False)
    assert record["top1"] >= 0.8, record
    lo, hi = SQUARE
    parts = {f"{i:03d}.png": {"square": [lo, lo, hi, hi], "square_top": [lo, lo, hi, lo + 4],
                              "background": [18, 18, 28, 28]} for i in range(5)}
    (tmp / "parts.yaml").write_text(yaml.safe_dump(parts))
    return tmp / "runs" / record["run_id"], data / "test" / "red", tmp / "parts.yaml"


def cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_masking_the_class_square_is_more_consistent_than_random_boxes(trained, tmp_path, capsys):
    run_dir, images, parts = trained
    code, out, err = cli(capsys, "diagnose", "correspondence", run_dir, "--images", images, "--parts", parts,
                         "--layers", "conv5,fc7", "--random", "6", "--seed", "1", "--out", tmp_path)
    assert code == 0, err
    rows = {(r["layer"], r["part"]): r for r in csv.DictReader((tmp_path / "correspondence.csv").open())}
    assert set(rows) == {(layer, p) for layer in ("conv5", "fc7") for p in ("square", "square_top", "background",
                                                                                "random")}
    assert int(rows[("conv5", "square")]["pairs"]) == 10 and int(rows[("conv5", "random")]["pairs"]) == 10 * 6 * 3
    for layer in ("conv5", "fc7"):
        square, rand = float(rows[(layer, "square")]["mean"]), float(rows[(layer, "random")]["mean"])
        assert square < rand - 0.05, (layer, square, rand)
        # Delta is the paper's sum over ordered pairs i != j: 2 x 10 pairs x their mean.
        assert float(rows[(layer, "square")]["delta"]) == pytest.approx(20 * square, abs=1e-4)
    md = (tmp_path / "correspondence.md").read_text()
    assert "| occlusion location | mean feature sign change, conv5 | mean feature sign change, fc7 |" in md
    assert md.count("\n| ") == 5 and "| random | " in md and md in out


def test_filters_command_on_a_run_with_its_test_images(trained, tmp_path, capsys):
    run_dir = trained[0]
    code, out, err = cli(capsys, "diagnose", "filters", run_dir, "--out", tmp_path, "--max-images", "12")
    assert code == 0, err
    run_id = run_dir.name
    per_filter = list(csv.DictReader((tmp_path / run_id / "filters.csv").open()))
    assert len(per_filter) == 8  # cifar8 at width 0.25
    assert all(r["mean_activation"] != "" for r in per_filter)
    assert sorted(int(r["frequency_rank"]) for r in per_filter) == list(range(8))
    (summary,) = csv.DictReader((tmp_path / "filters_summary.csv").open())
    assert summary["run_id"] == run_id and summary["radius"] == "0.1"
    assert int(summary["dead"]) == sum(int(r["dead"]) for r in per_filter)
    assert summary["activation_images"].startswith("12 ")
    assert (tmp_path / run_id / "filters_by_frequency.png").stat().st_size > 1000
    assert out.startswith(f"{run_id} (cifar8 conv1, 8 filters 5x5): dead ")


@pytest.mark.parametrize("case", ["no_parts_file", "box_outside", "unknown_layer", "missing_image", "uneven_parts"])
def test_bad_correspondence_inputs_are_one_line_exit_2(case, trained, tmp_path, capsys):
    run_dir, images, parts = trained
    data = yaml.safe_load(parts.read_text())
    layers = "conv5"
    expected = {"no_parts_file": "does not exist", "box_outside": "is outside the image or empty; allowed: "
                "0 <= x0 < x1 <= 32, 0 <= y0 < y1 <= 32", "unknown_layer": "Invalid value for '--layers': 'conv9' is not one "
                "of 'conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'",
                "missing_image": "image '999.png' listed in", "uneven_parts": "must name the same parts"}[case]
    if case == "box_outside":
        data["001.png"]["square"] = [20, 20, 40, 30]
    elif case == "unknown_layer":
        layers = "conv5,conv9"
    elif case == "missing_image":
        data["999.png"] = data["000.png"]
    elif case == "uneven_parts":
        del data["002.png"]["background"]
    bad = tmp_path / "parts.yaml"
    if case != "no_parts_file":
        bad.write_text(yaml.safe_dump(data))
    code, _, err = cli(capsys, "diagnose", "correspondence", run_dir, "--images", images, "--parts", bad,
                       "--layers", layers, "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_parts_file_keeps_the_first_images_part_order(tmp_path):
    (tmp_path / "p.yaml").write_text("a.png: {nose: [0, 0, 2, 2], eye: [1, 1, 3, 3]}\n"
                                     "b.png: {eye: [2, 2, 4, 4], nose: [0, 1, 2, 3]}\n")
    parts = read_parts(tmp_path / "p.yaml")
    assert parts.images == ["a.png", "b.png"] and parts.names == ["nose", "eye"]
    assert parts.boxes.tolist() == [[[0, 0, 2, 2], [1, 1, 3, 3]], [[0, 1, 2, 3], [2, 2, 4, 4]]]


def test_the_reports_conv1_section_outlives_the_weights_of_its_base_nets(trained, tmp_path):
    import shutil

    from tfxfer.diagnose.filters import run_health
    from tfxfer.report import write_report
    from tfxfer.runs.finished import load_run

    run_dir, _, _ = trained
    results = tmp_path / "results"
    shutil.copytree(run_dir, results / run_dir.name)

    def rows():
        write_report(results)
        return [line for line in (results / "report.md").read_text().splitlines()
                if line.startswith(f"| {run_dir.name} | cifar8 |")]

    measured = rows()
    kept = json.loads((results / run_dir.name / "conv1_health.json").read_text())
    assert kept == {**run_health(load_run(run_dir, float32=True), max_images=None).summary(), "dead_norm": Thresholds().dead_norm}
    assert len(measured) == 1 and f"| {kept['init_correlation']} |" in measured[0]
    # As committed results are: the record without its weights still reports what they held.
    (results / run_dir.name / "model.weights.h5").unlink()
    assert rows() == measured
