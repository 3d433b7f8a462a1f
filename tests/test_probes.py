"""tfxfer probe and tfxfer similarity: linear probes, folds, the scratch row, export features, CKA.

Two tiny base nets (baseA, baseB) are trained once on the synthetic dataset; the probes read
task B (12 classes, chance 1/12) through baseA's layers.
"""
import csv
from fractions import Fraction

import numpy as np
import pytest
from conftest import trained_bases
from helpers import assert_user_error
from scipy.stats import ortho_group

from tfxfer.cli import main
from tfxfer.probes import cka as C
from tfxfer.probes import probe, similarity
from tfxfer.probes.features import ExportSource, ModelSource, feature_source
from tfxfer.probes.linear import mean_per_class_accuracy, per_class_accuracy, pipeline
from tfxfer.probes.similarity import grid_pairs, layer_cka
from tfxfer.probes.targets import draw_fold, resolve_target
from tfxfer.runs.finished import load_run

CHANCE = 1 / 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"A": baseA run dir, "B": baseB run dir}, both in one output directory (an experiment dir)."""
    return trained_bases(tmp_path_factory, "probes", "AB", epochs=4)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- scoring, folds, classifiers ------------------------------------------------------------------


def test_mean_per_class_accuracy_on_a_hand_made_confusion_case():
    # class 0: 8 images, 6 right; class 1: 2 images, 0 right; class 2: 4 images, 4 right.
    y_true = np.array([0] * 8 + [1] * 2 + [2] * 4)
    y_pred = np.array([0] * 6 + [2] * 2 + [0] * 2 + [2] * 4)
    np.testing.assert_allclose(per_class_accuracy(y_true, y_pred, 3), [0.75, 0.0, 1.0])
    assert mean_per_class_accuracy(y_true, y_pred, 3) == pytest.approx((0.75 + 0 + 1) / 3)
    assert np.mean(y_true == y_pred) == pytest.approx(10 / 14)  # what plain accuracy would have said
    # A class without test images does not count (it is not a zero).
    assert mean_per_class_accuracy(np.array([0, 0, 2]), np.array([0, 1, 2]), 3) == pytest.approx(0.75)


def test_folds_reproduce_from_their_seeds_and_nest_over_k(runs):
    finished = load_run(runs["A"])
    target = resolve_target(finished)  # baseA's other task: B
    assert target.name == "synthetic task B" and len(target.class_names) == 12 and not target.pooled
    a, again, other = draw_fold(target, 5, seed=7), draw_fold(target, 5, seed=7), draw_fold(target, 5, seed=8)
    np.testing.assert_array_equal(a.train, again.train)
    np.testing.assert_array_equal(a.test, again.test)
    assert not np.array_equal(a.train, other.train)
    assert np.bincount(target.train_y[a.train]).tolist() == [5] * 12
    assert np.bincount(target.test_y[a.test]).tolist() == [20] * 12  # tiny: 20 test images a class (< 50)
    small = draw_fold(target, 2, seed=7)
    assert set(small.train) < set(a.train)  # k = 2's images are among k = 5's


def test_pooled_target_tests_on_the_images_not_drawn(tmp_path, runs):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / "pool" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(tmp_path / "pool" / c / f"{i}.jpg")
    target = resolve_target(load_run(runs["A"]), f"folder:{tmp_path / 'pool'}")
    assert target.pooled and len(target.train_x) == 18
    fold = draw_fold(target, 4, seed=0)
    assert not set(fold.train) & set(fold.test) and len(fold.test) == 3 * 2  # the rest as test
    from tfxfer.errors import UserError

    with pytest.raises(UserError, match="per_class 6 is too many"):
        draw_fold(target, 6, seed=0)


def test_span_rotation_keeps_the_linear_models_predictions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 300)), np.arange(40) % 4
    x[np.arange(40), y] += 2
    test = rng.normal(size=(50, 300))
    for clf in ("softmax", "svm"):
        rotated = pipeline(clf, 0, n_train=40, dim=300, C=0.01).fit(x, y)
        plain = pipeline(clf, 0, n_train=10**6, dim=300, C=0.01).fit(x, y)
        assert "span" in rotated.named_steps and "span" not in plain.named_steps
        np.testing.assert_allclose(rotated.decision_function(test), plain.decision_function(test), atol=2e-3)


# --- features -------------------------------------------------------------------------------------


def test_export_features_equal_in_process_and_cached_ones(tmp_path, runs):
    from tfxfer.export import export_run

    finished = load_run(runs["A"])
    images = resolve_target(finished).test_x[:40]
    layers = ["conv2", "fc7"]
    for view in ("flatten", "avg"):
        path = export_run(runs["A"], layers, tmp_path / "exports", name=f"probe_{view}", conv=view,
                          serving_config=None)
        served = feature_source(finished, view, export=str(path))
        assert isinstance(served, ExportSource)
        in_process = ModelSource(finished, view)
        direct = {n: np.concatenate([b[n] for b in in_process.batches(images, layers, 16)]) for n in layers}
        exported = served.features(images, layers, batch_size=16)
        cached = in_process.features(images, layers, batch_size=16)
        for n in layers:
            assert exported[n].shape == direct[n].shape == cached[n].shape
            np.testing.assert_allclose(exported[n], direct[n], rtol=1e-5, atol=1e-5)
            # The activation cache keeps float16.
            np.testing.assert_allclose(cached[n], direct[n], rtol=2e-3, atol=2e-3 * np.abs(direct[n]).max())
    assert direct["conv2"].shape == (40, 16)  # avg: the channels of cifar8 x 0.25's conv2

    # The probe itself on the exported features; an export cut another way is refused.
    written = probe(runs["A"], layers=["fc7"], classifiers=["softmax"], per_class=[2], folds=1, view="avg",
                    export=str(path), out=tmp_path / "served", verbose=False)
    assert [r["layer"] for r in read_csv(written["csv"])] == ["fc7"]
    from tfxfer.errors import UserError

    with pytest.raises(UserError, match="reduces conv layers by 'avg', not by the view 'flatten'"):
        probe(runs["A"], layers=["fc7"], per_class=[2], folds=1, export=str(path), out=tmp_path / "no")
    assert not (tmp_path / "no").exists()


# --- the probe command ----------------------------------------------------------------------------


def test_probe_higher_layers_well_above_chance_with_outputs_and_reproducible_folds(tmp_path, runs):
    out = tmp_path / "probe"
    written = probe(runs["A"], layers=["conv1", "conv4"], classifiers=["softmax", "svm"], per_class=[2, 5], folds=2,
                    out=out, verbose=False)
    rows = read_csv(written["csv"])
    assert len(rows) == 2 * 2 * 2 * 2  # layers x classifiers x k x folds
    assert {r["seed"] for r in rows} == {"0", "1"}
    acc = {(r["classifier"], r["layer"], r["k"], r["fold"]): float(r["accuracy"]) for r in rows}
    for clf in ("softmax", "svm"):
        mean = np.mean([acc[(clf, "conv4", "5", f)] for f in "01"])
        assert mean > 3 * CHANCE, (clf, mean)

    # Table 7's shape: a row per classifier (layer), a column per k.
    table = written["table"].read_text().splitlines()
    header = next(line for line in table if line.startswith("| classifier"))
    assert header == "| classifier (layer) | k = 2 | k = 5 |"
    body = [line for line in table if line.startswith(("| softmax", "| svm"))]
    assert [line.split(" | ")[0] for line in body] == ["| softmax (1) conv1", "| svm (1) conv1",
                                                       "| softmax (4) conv4", "| svm (4) conv4"]
    assert all(" ± " in line for line in body)
    for name in ("vs_k", "vs_layer"):
        assert written[name].read_bytes()[:4] == b"\x89PNG"
    tags = scalar_tags(written["tensorboard"])
    assert {"probe/softmax/conv4", "probe/svm/conv1", "probe_by_layer/svm/k5"} <= tags

    # Fold 1 alone, from its seed (1), gives the same numbers.
    again = read_csv(probe(runs["A"], layers=["conv4"], classifiers=["svm"], per_class=[5], folds=1, seed=1,
                           out=tmp_path / "again", verbose=False)["csv"])
    assert float(again[0]["accuracy"]) == acc[("svm", "conv4", "5", "1")]


def scalar_tags(logdir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    ea.Reload()
    return set(ea.Tags()["tensors"]) | set(ea.Tags()["scalars"])


def test_scratch_row_trains_through_the_core_loop_once(tmp_path, runs):
    out = tmp_path / "scratch_probe"
    written = probe(runs["A"], layers=["fc6"], classifiers=["svm"], per_class=[2], folds=1, scratch=True,
                    scratch_steps=6, out=out, verbose=False)
    rows = read_csv(written["csv"])
    scratch = [r for r in rows if r["classifier"] == "scratch"]
    assert len(scratch) == 1 and scratch[0]["layer"] == "all" and 0 <= float(scratch[0]["accuracy"]) <= 1
    assert "| scratch (all layers, random init) |" in written["table"].read_text()
    (run_dir,) = (out / "scratch").iterdir()
    trained = load_run(run_dir)  # a finished run like any other: config, weights, result.json
    assert trained.record["treatment"] == "baseA" and len(trained.class_names) == 12
    assert trained.config.dataset.train_per_class == 2 and trained.config.seed == 0
    assert trained.config.dataset.val_fraction == 0.0 and trained.record["epochs"] == 6  # 24 images, 1 step each
    stamp = (run_dir / "result.json").stat().st_mtime_ns
    probe(runs["A"], layers=["fc6"], classifiers=["svm"], per_class=[2], folds=1, scratch=True, scratch_steps=6,
          out=out, verbose=False)
    assert (run_dir / "result.json").stat().st_mtime_ns == stamp  # reused, not retrained


@pytest.mark.parametrize("args, message", [
    (["--per-class", "61"], "per_class 61 is too many for synthetic task B"),
    (["--layers", "conv9"], "layers 'conv9' invalid; allowed: one or more of conv1, conv2, "),  # the run checks
    (["--classifier", "knn"], "Invalid value for '--classifier': 'knn' is not one of 'softmax', 'svm'"),
    (["--folds", "0"], "Invalid value for '--folds': 0 is not in the range x>=1"),
    (["--dataset", "C"], "dataset 'C' is unknown"),
])
def test_probe_cli_errors_are_one_line_and_write_nothing(tmp_path, runs, capsys, args, message):
    out = tmp_path / "nothing"
    assert_user_error(capsys, ["probe", runs["A"], "--out", out, *args], message, out)


# --- CKA ------------------------------------------------------------------------------------------


def song_hsic(k, l):
    """Song et al. (2012), eq. 5, exactly as printed, in exact rational arithmetic."""
    n = len(k)
    kt = [[Fraction(0) if i == j else k[i][j] for j in range(n)] for i in range(n)]
    lt = [[Fraction(0) if i == j else l[i][j] for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    ones_k, ones_l = sum(map(sum, kt)), sum(map(sum, lt))
    middle = sum(kt[i][j] * sum(lt[j]) for i in range(n) for j in range(n))  # 1' K~ L~ 1
    return (trace + ones_k * ones_l / ((n - 1) * (n - 2)) - Fraction(2, n - 2) * middle) / (n * (n - 3))


def test_cka_on_a_hand_computable_case():
    x = [[0], [1], [2], [4], [7]]
    y = [[1], [0], [3], [3], [9]]
    gx = [[Fraction(a[0] * b[0]) for b in x] for a in x]
    gy = [[Fraction(a[0] * b[0]) for b in y] for a in y]
    hxy, hxx, hyy = song_hsic(gx, gy), song_hsic(gx, gx), song_hsic(gy, gy)
    expected = float(hxy) / np.sqrt(float(hxx) * float(hyy))
    assert C.hsic_unbiased(C.gram(np.array(x, float)), C.gram(np.array(y, float))).numpy() == pytest.approx(
        float(hxy), rel=1e-12)
    assert C.cka(np.array(x, float), np.array(y, float)) == pytest.approx(expected, rel=1e-12)


def test_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 40))
    y = np.tanh(x[:, :10] @ rng.normal(size=(10, 30))) + 0.3 * rng.normal(size=(300, 30))
    q = ortho_group.rvs(40, random_state=1)
    for kernel in ("linear", "rbf"):
        assert C.cka(x, x, kernel) == pytest.approx(1.0, abs=1e-9)
        base = C.cka(x, y, kernel)
        assert 0.1 < base < 0.99
        assert C.cka(x @ q, y, kernel) == pytest.approx(base, abs=1e-9)  # orthogonal transform
        assert C.cka(7.5 * x, y, kernel) == pytest.approx(base, abs=1e-9)  # isotropic scaling
    # Independent random features: near 0 at large n (the biased estimator would give ~0.5 here).
    a, b = rng.normal(size=(3000, 500)), rng.normal(size=(3000, 500))
    assert abs(C.cka(a, b)) < 0.01


def test_minibatch_cka_matches_full_batch_on_network_features(runs):
    from tfxfer.data.registry import load_dataset

    images = load_dataset("synthetic", train_per_class=100, test_per_class=1, seed=3).train_x[:2048]
    a, b = ModelSource(load_run(runs["A"]), "flatten"), ModelSource(load_run(runs["B"]), "flatten")
    layers = ["conv1", "conv3", "fc7"]
    full = layer_cka(a, b, images, layers, layers, batch_size=len(images))
    # 4 shuffled passes of 2 minibatches of 1024: 8 x 1024² Gram entries in memory, never 2048².
    mini = layer_cka(a, b, images, layers, layers, batch_size=1024, passes=4)
    assert np.abs(full - mini).max() < 1e-3, (full, mini)
    assert 0.05 < full.min() and full.max() < 0.99  # not a trivial case
    same = layer_cka(a, a, images[:512], layers, layers, batch_size=128)
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-9)


def test_similarity_of_two_runs_and_of_an_experiment_directory(tmp_path, runs):
    written = similarity([runs["A"], runs["B"]], layers=["conv1", "conv5", "fc8"], max_images=194, batch_size=64,
                         out=tmp_path / "pair", verbose=False)
    rows = read_csv(written["csv"])
    assert len(rows) == 9 and {r["images"] for r in rows} == {"192"}  # 3 minibatches of 64; 2 left out
    assert all(-0.1 < float(r["cka"]) <= 1.0 + 1e-9 for r in rows)
    assert written["diagonal"].read_bytes()[:4] == b"\x89PNG"
    grid = runs["A"].parent
    assert grid_pairs(grid) == [(runs["A"], runs["B"])]
    written = similarity([grid], layers=["conv1", "fc7"], max_images=100, batch_size=50, verbose=False)
    assert written["md"] == grid / "similarity" / "similarity.md"
    md = written["md"].read_text()
    assert f"| {runs['A'].name} vs {runs['B'].name} |" in md


def test_similarity_cli_errors(tmp_path, runs, capsys):
    for args, message in ((["--max-images", "2"], "max_images 2 invalid; allowed: a whole number >= 4"),
                          (["--kernel", "cosine"], "Invalid value for '--kernel'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["similarity", str(runs["A"]), str(runs["B"]), "--out", str(tmp_path / "x"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["similarity", str(runs["A"])])
    assert "is a single run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
