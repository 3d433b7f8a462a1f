"""tfxfer score on a tiny trained base net: per-layer rows agree with the metrics on the same
features, outputs are written, and bad inputs are one line, exit 2, nothing written."""
import numpy as np
import pytest
from conftest import trained_bases
from helpers import assert_user_error

from tfxfer.models import LAYER_NAMES
from tfxfer.probes.features import ModelSource
from tfxfer.probes.targets import resolve_target
from tfxfer.runs.finished import load_run
from tfxfer.scores import METRICS
from tfxfer.scores.score import read_scores, score, softmax


@pytest.fixture(scope="module")
def base_a(tmp_path_factory):
    return trained_bases(tmp_path_factory, "scores", "A", epochs=2)["A"]


def test_scores_of_every_layer_match_the_metrics_on_the_same_features(tmp_path, base_a):
    out = tmp_path / "out"
    written = score(base_a, out=out, max_images=200, verbose=False)
    assert {p.name for p in written.values()} == {"score.csv", "score.md", "score.json", "score_vs_layer.png", "tb"}
    rows = read_scores(out / "score.csv")
    feature_metrics = [m for m in METRICS.values() if m.needs == "features"]
    assert len(rows) == 7 * len(feature_metrics) + 2  # LEEP and NCE: one row each, at fc8
    assert {r["layer"] for r in rows if r["metric"] in ("leep", "nce")} == {"fc8"}
    assert all(np.isfinite(r["score"]) and r["images"] == 200 and r["target"] == "synthetic task B" for r in rows)

    # The same images (seed 0's subset of task B's training images) through the same features.
    finished = load_run(base_a)
    target = resolve_target(finished, "B")
    idx = np.sort(np.random.default_rng(0).choice(len(target.train_y), 200, replace=False))
    feats = ModelSource(finished, "avg").features(target.train_x[idx], ["conv3", "fc8"])
    y = target.train_y[idx]
    by = {(r["metric"], r["layer"]): r["score"] for r in rows}
    assert by["logme", "conv3"] == pytest.approx(METRICS["logme"](feats["conv3"], y), rel=1e-9)
    assert by["leep", "fc8"] == pytest.approx(METRICS["leep"](softmax(feats["fc8"]), y), rel=1e-9)
    assert by["leep", "fc8"] <= 0 and by["hscore", "fc7"] >= 0
    md = (out / "score.md").read_text()
    assert "| logme (You et al., ICML 2021) |" in md and "200 training images" in md


@pytest.mark.parametrize("args, message", [
    (["--metric", "fid"], "Invalid value for '--metric': 'fid' is not one of 'logme', 'leep'"),
    (["--layers", "conv9"], "layers 'conv9' invalid; allowed: one or more of conv1, conv2, "),  # the run checks
    (["--dataset", "C"], "dataset 'C' is unknown"),
    (["--max-images", "1"], "Invalid value for '--max-images': 1 is not in the range x>=2"),
])
def test_score_cli_errors_are_one_line_and_write_nothing(tmp_path, base_a, capsys, args, message):
    out = tmp_path / "nothing"
    assert_user_error(capsys, ["score", base_a, "--out", out, *args], message, out)


def test_a_target_with_one_class_and_a_missing_run_dir_are_refused(tmp_path, base_a, capsys):
    import tensorflow as tf

    folder = tmp_path / "one" / "only"
    folder.mkdir(parents=True)
    for i in range(4):
        img = np.full((32, 32, 3), 40 * i, np.uint8)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    for args, message in ([str(base_a), "--dataset", f"folder:{tmp_path / 'one'}"], "a target with one class"), \
                         ([str(tmp_path / "no_run")], "does not exist"):
        out = tmp_path / "nothing"
        assert_user_error(capsys, ["score", *args, "--out", out], message, out)


def test_a_layer_the_network_lacks_is_refused(tmp_path, base_a, monkeypatch):
    from tfxfer.errors import UserError
    from tfxfer.runs import finished

    real = finished.load_run

    def without_conv4(run_dir, float32=False):  # as an arch variant without layer 4 would be
        loaded = real(run_dir, float32)
        loaded.model.get_layer("conv4").name = "conv4_removed"
        return loaded

    with pytest.raises(UserError, match="metric 'fid' unknown; allowed: logme, leep"):  # the library's own check
        score(base_a, metrics=["fid"], out=tmp_path / "nothing", verbose=False)
    monkeypatch.setattr(finished, "load_run", without_conv4)
    with pytest.raises(UserError, match=r"layers 'conv4' are not in baseA-\w+'s network"):
        score(base_a, layers=["conv3", "conv4"], out=tmp_path / "nothing", verbose=False)
    assert not (tmp_path / "nothing").exists()
    assert LAYER_NAMES[3] == "conv4"
