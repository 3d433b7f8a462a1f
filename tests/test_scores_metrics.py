"""tfxfer.scores.metrics against plainly written references from the papers' formulas, plus
properties and bad inputs. numpy on tiny arrays only: the whole file runs in seconds.

The references here never call the package: LogME maximizes the closed-form evidence directly
(a log grid over (alpha, beta), refined by scipy.optimize) with dense D x D matrices instead of the
package's SVD fixed point; LEEP and NCE are loops over images and classes; the H-scores build the
class-mean matrix g and use np.cov / pinv / inv, with the Ledoit-Wolf intensity from its formula;
TransRate takes slogdet of the d x d matrix.
"""

import math
from collections import Counter

import numpy as np
import pytest
from scipy import optimize

from tfxfer.errors import UserError
from tfxfer.scores import (FEATURES, METRICS, SOURCE_PROBS, get_metric, hscore, hscore_shrinkage, leep,
                           logme, nce, transrate)

# Any RuntimeWarning (numpy's divide-by-zero / invalid-value, LogME's non-convergence) fails a test.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

FEATURE_METRICS = [logme, hscore, hscore_shrinkage, transrate]
TOL = 1e-6


def _data(n=40, d=6, classes=3, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    centres = rng.normal(size=(classes, d))
    features = rng.normal(size=(n, d)) + shift * centres[labels]
    return features, labels


def _probs(n=40, z=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(z, 0.7), size=n)


# ------------------------------------------------------------------------------------------------
# references


def ref_log_evidence(f, y, alpha, beta, eps=1e-5):
    """LogME's L(alpha, beta) / n (You et al. 2021), dense, minus the eps (alpha + beta) / 2 of the
    original code's guards."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet_a = np.linalg.slogdet(a)
    value = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
             - beta / 2 * float(np.sum((f @ m - y) ** 2)) - alpha / 2 * float(m @ m) - logdet_a / 2
             - eps * (alpha + beta) / 2)
    return value / n


def ref_max_evidence(f, y):
    def negative(log_ab):
        try:
            return -ref_log_evidence(f, y, math.exp(log_ab[0]), math.exp(log_ab[1]))
        except np.linalg.LinAlgError:  # A numerically singular at a grid corner
            return math.inf

    grid = np.linspace(-16.0, 16.0, 33)
    start = min(((a, b) for a in grid for b in grid), key=negative)
    best = optimize.minimize(negative, start, method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000})
    return -best.fun


def ref_logme(f, labels):
    return float(np.mean([ref_max_evidence(f, (labels == c).astype(float)) for c in np.unique(labels)]))


def ref_leep(theta, labels):
    n, z_count = theta.shape
    classes = sorted(set(labels.tolist()))
    joint = {(y, z): sum(theta[i, z] for i in range(n) if labels[i] == y) / n
             for y in classes for z in range(z_count)}
    p_z = {z: sum(joint[y, z] for y in classes) for z in range(z_count)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[labels[i], z] / p_z[z] * theta[i, z] for z in range(z_count)))
    return total / n


def ref_nce(source, labels):
    n = len(labels)
    pairs = Counter(zip(source.tolist(), labels.tolist()))
    per_z = Counter(source.tolist())
    return sum(count / n * math.log(count / per_z[z]) for (z, _), count in pairs.items())


def ref_hscore(f, labels):
    g = np.zeros_like(f)
    for c in np.unique(labels):
        g[labels == c] = f[labels == c].mean(axis=0)
    return float(np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False)))


def ref_ledoit_wolf(x):
    """Ledoit & Wolf (2004): shrinkage b^2 / d^2 towards m I, m = tr(S)/p, with the inner product
    <A, B> = tr(A B^T) / p; x is centred, S = x^T x / n."""
    n, p = x.shape
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2) / p
    b2_bar = sum(np.sum((np.outer(row, row) - s) ** 2) / p for row in x) / n ** 2
    return min(b2_bar, d2) / d2


def ref_hscore_shrinkage(f, labels):
    x = f - f.mean(axis=0)
    n, p = x.shape
    alpha = ref_ledoit_wolf(x)
    cov = np.cov(x, rowvar=False, bias=True)
    shrunk = (1 - alpha) * cov + alpha * np.trace(cov) / p * np.eye(p)
    g = np.zeros_like(x)
    for c in np.unique(labels):
        g[labels == c] = x[labels == c].mean(axis=0)
    return float(np.trace(np.linalg.inv(shrunk) @ ((1 - alpha) * np.cov(g, rowvar=False, bias=True))))


def ref_transrate(f, labels, eps=1e-4):
    z = f - f.mean(axis=0)
    z = z / math.sqrt(np.sum(z ** 2) / len(z))

    def rate(part):
        n, d = part.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + 1 / (n * eps) * part.T @ part)[1]

    return rate(z) - sum(np.mean(labels == c) * rate(z[labels == c]) for c in np.unique(labels))


# ------------------------------------------------------------------------------------------------
# agreement with the references


@pytest.mark.parametrize("n,d,duplicate", [(40, 6, False), (15, 30, False), (40, 8, True)],
                         ids=["n>d", "d>n", "rank-deficient"])
def test_logme_matches_direct_evidence_maximization(n, d, duplicate):
    f, labels = _data(n=n, d=d)
    if duplicate:  # rank 6 of 8: a repeated column and a sum of two others
        f[:, 6] = f[:, 0]
        f[:, 7] = f[:, 1] + f[:, 2]
    assert logme(f, labels) == pytest.approx(ref_logme(f, labels), abs=TOL)


def test_logme_reference_ignores_label_values():
    f, labels = _data()
    relabelled = np.array([7, -2, 40])[labels]
    assert logme(f, relabelled) == pytest.approx(logme(f, labels), abs=1e-12)


def test_leep_matches_loops():
    theta = _probs()
    _, labels = _data()
    assert leep(theta, labels) == pytest.approx(ref_leep(theta, labels), abs=TOL)


def test_leep_with_a_source_class_no_image_predicts():
    theta = _probs(z=4)
    theta = np.hstack([theta, np.zeros((len(theta), 1))])  # source class 4: P(z) = 0
    _, labels = _data()
    assert leep(theta, labels) == pytest.approx(leep(theta[:, :4], labels), abs=1e-12)


def test_nce_matches_counts():
    rng = np.random.default_rng(3)
    _, labels = _data()
    source = np.where(rng.random(len(labels)) < 0.6, labels, rng.integers(0, 5, len(labels)))
    assert nce(source, labels) == pytest.approx(ref_nce(source, labels), abs=TOL)


def test_nce_registry_entry_uses_the_argmax():
    theta = _probs()
    _, labels = _data()
    assert get_metric("nce")(theta, labels) == pytest.approx(ref_nce(theta.argmax(axis=1), labels), abs=TOL)


def test_hscore_matches_matrix_product_definition():
    f, labels = _data()
    value = hscore(f, labels)
    assert value == pytest.approx(ref_hscore(f, labels), abs=TOL)
    # the element-wise product (stable_transfer's trace(pinv * cov_g)) is a different number
    g = np.zeros_like(f)
    for c in np.unique(labels):
        g[labels == c] = f[labels == c].mean(axis=0)
    elementwise = np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) * np.cov(g, rowvar=False))
    assert abs(value - elementwise) > 1e-3


def test_ledoit_wolf_reference_is_sklearns():
    from sklearn.covariance import LedoitWolf
    f, _ = _data()
    x = f - f.mean(axis=0)
    assert ref_ledoit_wolf(x) == pytest.approx(LedoitWolf(assume_centered=True).fit(x).shrinkage_, abs=1e-12)


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)], ids=["n>d", "d>n"])
def test_hscore_shrinkage_matches_formula(n, d):
    f, labels = _data(n=n, d=d)
    assert hscore_shrinkage(f, labels) == pytest.approx(ref_hscore_shrinkage(f, labels), abs=TOL)


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)], ids=["n>d", "d>n"])
def test_transrate_matches_slogdet(n, d):
    f, labels = _data(n=n, d=d)
    assert transrate(f, labels) == pytest.approx(ref_transrate(f, labels), abs=TOL)


# ------------------------------------------------------------------------------------------------
# properties


def test_logme_invariant_to_feature_and_sample_order():
    f, labels = _data(d=10)
    rng = np.random.default_rng(5)
    columns, rows = rng.permutation(f.shape[1]), rng.permutation(f.shape[0])
    base = logme(f, labels)
    assert logme(f[:, columns], labels) == pytest.approx(base, abs=1e-10)
    assert logme(f[rows], labels[rows]) == pytest.approx(base, abs=1e-10)


def test_bounds_on_random_data():
    f, labels = _data()
    theta = _probs()
    assert leep(theta, labels) <= 0
    assert nce(theta.argmax(axis=1), labels) <= 0
    assert nce(labels, labels) == pytest.approx(0.0, abs=1e-12)  # Z determines Y
    assert 0 <= hscore(f, labels) <= 2 + 1e-9                    # C - 1 = 2
    assert hscore_shrinkage(f, labels) >= 0
    assert transrate(f, labels) >= 0


def test_transrate_invariant_to_feature_scale():
    f, labels = _data()
    assert transrate(1e4 * f + 3.0, labels) == pytest.approx(transrate(f, labels), abs=1e-8)


@pytest.mark.parametrize("metric", FEATURE_METRICS, ids=lambda m: m.__name__)
def test_feature_scores_rise_with_class_separation(metric):
    values = [metric(*_data(n=60, d=5, shift=shift, seed=11)) for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_leep_rises_when_source_predictions_align_with_labels():
    rng = np.random.default_rng(12)
    _, labels = _data(n=60)
    noise = rng.normal(size=(60, 4))
    values = []
    for sharpness in (0.0, 0.5, 1.0, 2.0, 4.0):
        logits = noise + sharpness * np.eye(4)[labels]
        theta = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        values.append(leep(theta, labels))
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_nce_rises_when_fewer_source_labels_are_corrupted():
    rng = np.random.default_rng(13)
    _, labels = _data(n=90)
    order, random_source = rng.permutation(90), rng.integers(0, 6, 90)
    values = []
    for corrupted in (90, 60, 30, 10, 0):  # nested corrupted sets
        source = labels.copy()
        source[order[:corrupted]] = random_source[order[:corrupted]]
        values.append(nce(source, labels))
    assert all(a < b for a, b in zip(values, values[1:])), values


# ------------------------------------------------------------------------------------------------
# degenerate but valid inputs: finite numbers, no warnings


def _degenerate_cases():
    f, labels = _data(n=30, d=8)
    duplicated = f.copy()
    duplicated[:, 4:] = f[:, :4]
    zero_column = f.copy()
    zero_column[:, 0] = 0.0
    one_image = labels.copy()
    one_image[0] = 9  # class 9 has one image
    wide, wide_labels = _data(n=10, d=50)
    return {
        "d>n": (wide, wide_labels),
        "rank-deficient": (duplicated, labels),
        "zero column": (zero_column, labels),
        "one-image class": (f, one_image),
        "huge scale": (1e6 * f, labels),
        "tiny scale": (1e-6 * f, labels),
        "one dimension": (f[:, :1], labels),
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
@pytest.mark.parametrize("metric", FEATURE_METRICS, ids=lambda m: m.__name__)
def test_feature_scores_finite_on_degenerate_features(metric, case):
    f, labels = _degenerate_cases()[case]
    assert np.isfinite(metric(f, labels))


def test_hscore_saturates_when_dimensions_exceed_images():
    f, labels = _data(n=10, d=50, shift=0.0)
    assert hscore(f, labels) == pytest.approx(2.0, abs=1e-9)  # C - 1, whatever the features
    assert hscore_shrinkage(f, labels) < 2.0


def test_constant_and_zero_features():
    _, labels = _data(n=20)
    constant = np.full((20, 3), 2.5)
    assert hscore(constant, labels) == 0.0
    assert hscore_shrinkage(constant, labels) == 0.0
    assert transrate(constant, labels) == 0.0
    assert np.isfinite(logme(constant, labels))
    assert np.isfinite(logme(np.zeros((20, 3)), labels))


def test_source_scores_with_a_one_image_class_and_a_one_class_source():
    theta = _probs()
    _, labels = _data()
    labels[0] = 9
    assert np.isfinite(leep(theta, labels))
    assert np.isfinite(nce(theta.argmax(axis=1), labels))
    assert nce(np.zeros(len(labels), int), labels) < 0  # -H(Y)


# ------------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize("name", list(METRICS))
def test_a_target_with_one_class_is_refused(name):
    metric = get_metric(name)
    x = _data()[0] if metric.needs == FEATURES else _probs()
    with pytest.raises(UserError, match="a target with one class"):
        metric(x, np.zeros(40, int))


@pytest.mark.parametrize("name", list(METRICS))
def test_mismatched_lengths_are_refused(name):
    metric = get_metric(name)
    x = _data()[0] if metric.needs == FEATURES else _probs()
    with pytest.raises(UserError, match="39 entries but there are 40 images"):
        metric(x, _data()[1][:39])


@pytest.mark.parametrize("name", list(METRICS))
def test_non_finite_input_is_refused(name):
    metric = get_metric(name)
    x = _data()[0] if metric.needs == FEATURES else _probs()
    x[3, 1] = np.nan
    with pytest.raises(UserError, match="1 non-finite values"):
        metric(x, _data()[1])


@pytest.mark.parametrize("name", list(METRICS))
@pytest.mark.parametrize("shape", [(0, 5), (40, 0)])
def test_empty_input_is_refused(name, shape):
    with pytest.raises(UserError, match="empty"):
        get_metric(name)(np.zeros(shape), np.arange(shape[0]) % 2)


def test_other_bad_inputs():
    f, labels = _data()
    with pytest.raises(UserError, match="2-D array"):
        logme(f[:, 0], labels)
    with pytest.raises(UserError, match="labels are empty"):
        logme(f, [])
    with pytest.raises(UserError, match="non-integer"):
        hscore(f, labels + 0.5)
    with pytest.raises(UserError, match="not logits"):
        leep(np.log(_probs()), labels)
    with pytest.raises(UserError, match="row 0 sums to 2"):
        leep(2 * _probs(), labels)
    with pytest.raises(UserError, match="eps"):
        transrate(f, labels, eps=0.0)


# ------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_inputs():
    assert {name: metric.needs for name, metric in METRICS.items()} == {
        "logme": FEATURES, "leep": SOURCE_PROBS, "nce": SOURCE_PROBS,
        "hscore": FEATURES, "hscore-lw": FEATURES, "transrate": FEATURES}
    assert get_metric(" LogME ") is METRICS["logme"]
    f, labels = _data()
    assert get_metric("hscore-lw")(f, labels) == hscore_shrinkage(f, labels)


def test_unknown_metric_lists_the_allowed_names():
    with pytest.raises(UserError, match="metric 'gbc' unknown; allowed: logme, leep, nce, hscore, "
                                        "hscore-lw, transrate"):
        get_metric("gbc")


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)], ids=["n>d", "d>n"])
def test_ledoit_wolf_from_the_svd_is_sklearns(n, d):
    from sklearn.covariance import ledoit_wolf_shrinkage

    from tfxfer.scores.metrics import CentredSVD, _ledoit_wolf_shrinkage
    f, _ = _data(n=n, d=d)
    svd = CentredSVD.of(f)
    assert _ledoit_wolf_shrinkage(svd) == pytest.approx(ledoit_wolf_shrinkage(svd.centred, assume_centered=True),
                                                        rel=1e-10)


def test_feature_scores_share_one_svd_and_equal_each_metric_alone():
    from tfxfer.scores.metrics import feature_scores
    f, labels = _data(n=40, d=6)
    names = ["logme", "hscore", "hscore-lw", "transrate"]
    together = feature_scores(f, labels, names)
    assert list(together) == names
    for name in names:
        assert together[name][0] == pytest.approx(get_metric(name)(f, labels), abs=1e-12)
    with pytest.raises(UserError, match="metric 'leep' reads source probabilities"):
        feature_scores(f, labels, ["leep"])
