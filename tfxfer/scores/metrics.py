"""Transferability scores computed from features (or a source classifier's outputs) and target labels.

Pure numpy/scipy, float64 throughout. Every function takes labels as a 1-D array of class ids
(integers or strings, any values: the classes are the distinct values present) and returns one
float, higher meaning "more transferable".

Inputs are checked before anything is computed; a bad one raises :class:`tfxfer.errors.UserError`
with a one-line message naming the value and what is allowed: empty input, a 2-D shape that is not
[images, dimensions], features that are not finite, a length that differs from the labels', and
labels with fewer than two classes ("a target with one class"). A class with a single image is
valid for every score here and gives a finite value (tested): LogME fits its one-hot column like
any other, LEEP/NCE count it in the empirical joint, the H-scores use the image as its class mean,
TransRate codes it as a one-vector class.

Implementations and where they differ from public code are documented function by function.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import numpy as np

from tfxfer.errors import UserError

# What a metric's first argument is: per-image features [N, D], or the source network's
# classifier probabilities on the target images [N, Z] (softmax outputs, rows summing to 1).
FEATURES = "features"
SOURCE_PROBS = "source_probs"

# The guard of LogME's original code (You et al.): added to the denominators of the alpha/beta
# updates, so neither divides by zero.
LOGME_EPS = 1e-5
# How far a row of source probabilities may sum from 1 before it is refused as not probabilities.
_PROB_SUM_ATOL = 1e-3


# --------------------------------------------------------------------------------------------
# input checks


def _features(features, name: str = "features") -> np.ndarray:
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be numbers; got {type(features).__name__}") from None
    if array.ndim != 2:
        raise UserError(f"{name} must be a 2-D array [images, dimensions]; got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{name} are empty (shape {array.shape}); allowed: at least 2 images "
                        f"and 1 dimension")
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise UserError(f"{name} have {bad} non-finite values (NaN or inf); allowed: finite numbers only")
    return array


def _codes(values, name: str, n: int | None, min_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids -> (codes 0..C-1 per image, images per class)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise UserError(f"{name} must be a 1-D array of class ids; got shape {array.shape}")
    if array.size == 0:
        raise UserError(f"{name} are empty; allowed: one class id per image, at least 2 images")
    if n is not None and array.size != n:
        raise UserError(f"{name} have {array.size} entries but there are {n} images; "
                        f"allowed: one class id per image")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise UserError(f"{name} contain non-integer values; allowed: integer or string class ids")
    elif array.dtype.kind not in "iubUS":
        raise UserError(f"{name} have dtype {array.dtype}; allowed: integer or string class ids")
    _, codes, counts = np.unique(array, return_inverse=True, return_counts=True)
    if counts.size < min_classes:
        raise UserError(f"{name} have {counts.size} class ({array[0].item()!r} only): a target with one class "
                        f"cannot be scored; allowed: at least {min_classes} classes")
    return codes.reshape(-1), counts


def _labels(labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _codes(labels, "labels", n, min_classes=2)


def _probabilities(source_probs) -> np.ndarray:
    probs = _features(source_probs, "source_probs")
    if np.any(probs < 0):
        raise UserError(f"source_probs have {int(np.sum(probs < 0))} negative values; allowed: "
                        f"probabilities (softmax outputs), not logits")
    sums = probs.sum(axis=1)
    far = np.flatnonzero(np.abs(sums - 1.0) > _PROB_SUM_ATOL)
    if far.size:
        raise UserError(f"source_probs row {int(far[0])} sums to {sums[far[0]]:.6g}; allowed: rows of "
                        f"probabilities summing to 1 (softmax outputs, within {_PROB_SUM_ATOL})")
    return probs / sums[:, None]  # exactly normalized in float64


def _one_hot(codes: np.ndarray, classes: int) -> np.ndarray:
    onehot = np.zeros((codes.size, classes))
    onehot[np.arange(codes.size), codes] = 1.0
    return onehot


def _svd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Economy SVD M = U S V^T (works for D > N); returns (U_r, s_r) for the r singular values above
    numpy's rank tolerance (s_max * max(N, D) * machine eps, as np.linalg.matrix_rank): the others
    are treated as exactly zero."""
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0], s[:0]
    keep = s > s[0] * max(matrix.shape) * np.finfo(np.float64).eps
    return u[:, keep], s[keep]


# --------------------------------------------------------------------------------------------
# LogME


def _logme_class(x2: np.ndarray, res_x2: float, sigma: np.ndarray, n: int, d: int,
                 eps: float, tol: float, max_iter: int) -> tuple[float, bool]:
    """Maximum (guarded) log evidence per image of one target column y; see :func:`logme`.

    x2 = (U_r^T y)^2, res_x2 = |y|^2 - |U_r^T y|^2 (the part of y outside F's column space),
    sigma = the r nonzero eigenvalues of F^T F."""
    r = sigma.size

    def moments(t: float) -> tuple[float, float, float, float]:
        # With t = alpha / beta, m = (t I + F^T F)^-1 F^T y; in F's SVD basis:
        shrink = t / (sigma + t)
        gamma = float(np.sum(sigma / (sigma + t)))      # effective number of parameters
        n_minus_gamma = (n - r) + float(np.sum(shrink))  # n - gamma without cancellation
        m2 = float(np.sum(sigma * x2 / (sigma + t) ** 2))          # m^T m
        res2 = float(np.sum(x2 * shrink ** 2)) + res_x2            # |F m - y|^2
        return gamma, n_minus_gamma, m2, res2

    alpha, beta = 1.0, 1.0
    converged = False
    for _ in range(max_iter):
        t = alpha / beta
        gamma, n_minus_gamma, m2, res2 = moments(t)
        # MacKay's fixed-point updates (LogME Algorithm 1) with the original code's eps guards.
        alpha = gamma / (m2 + eps) if r else 0.0
        beta = n_minus_gamma / (res2 + eps)
        if r == 0 or abs(alpha / beta - t) <= tol * t:
            converged = True
            break
    # The evidence at the final (alpha, beta), with m and the residual of that same (alpha, beta).
    _, _, m2, res2 = moments(alpha / beta) if r else (0.0, 0.0, 0.0, res_x2)
    # log|A| = sum_{i<=r} log(alpha + beta sigma_i) + (d - r) log alpha: the d - r zero
    # eigenvalues of F^T F cancel (d - r)/2 log alpha of the prior term d/2 log alpha.
    log_alpha_term = 0.5 * r * np.log(alpha) if r else 0.0
    evidence = (0.5 * n * np.log(beta) + log_alpha_term
                - 0.5 * float(np.sum(np.log(alpha + beta * sigma)))
                - 0.5 * beta * (res2 + eps) - 0.5 * alpha * (m2 + eps)
                - 0.5 * n * np.log(2.0 * np.pi))
    return evidence / n, converged


def logme(features, labels, *, eps: float = LOGME_EPS, tol: float = 1e-10,
          max_iter: int = 10_000) -> float:
    """LogME: the maximum log evidence of a Bayesian linear model from features to each one-hot
    target column, per image, averaged over the classes.

    You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021. For a target column y (1 for the images of class k, else 0) and
    features F [n, d], the model y = F w + N(0, 1/beta), w ~ N(0, I/alpha) has the log evidence

        L(alpha, beta) = n/2 log beta + d/2 log alpha - n/2 log 2 pi
                         - beta/2 |F m - y|^2 - alpha/2 m^T m - 1/2 log|A|,
        A = alpha I + beta F^T F,   m = beta A^-1 F^T y,

    maximized over (alpha, beta) by the paper's Algorithm 1 (MacKay's fixed point)
        gamma = sum_i beta sigma_i / (alpha + beta sigma_i),
        alpha <- gamma / (m^T m + eps),   beta <- (n - gamma) / (|F m - y|^2 + eps),
    where sigma_i are the eigenvalues of F^T F, here from the economy SVD F = U S V^T (so d > n
    works: only min(n, d) singular values exist; the remaining d - r eigenvalues are exactly 0 and
    enter log|A| as (d - r) log alpha). Singular values below s_max * max(n, d) * machine eps
    count as zero (rank-deficient features). LogME = (1/K) sum_k L_k / n over the K classes
    present in ``labels``. Features are used as given (not centred), as in the paper.

    Guards and stopping, and how they relate to the original code (github.com/thuml/LogME):
    - ``eps`` = 1e-5 is the original code's guard in both update denominators. With it, the
      fixed point is exactly the stationary point of L(alpha, beta) - eps (alpha + beta) / 2, and,
      as the ICML code does (its ``beta_de + epsilon``, ``alpha_de + epsilon`` terms), that
      penalized value is what is reported. It keeps alpha and beta finite when y is orthogonal to
      the features or fitted exactly (d >= n); eps -> 0 gives the paper's L.
    - n - gamma is computed as (n - r) + sum_i alpha / (alpha + beta sigma_i), which stays
      positive when the features fit y exactly (r = n), instead of a cancelling subtraction.
    - The paper's Algorithm 1 iterates "until alpha, beta converge"; the original code stops when
      |delta(alpha/beta)| / (alpha/beta) < 1e-2 (ICML code) or <= 1e-3 (its later fixed-point
      code), after at most 11 iterations. Each iteration costs O(rank) once the SVD is done, so here
      it runs to convergence: relative change of alpha/beta <= ``tol`` (1e-10), at most
      ``max_iter`` iterations (a RuntimeWarning if that is reached), and the evidence is then
      evaluated with the m of the final (alpha, beta) (the original code pairs the final alpha,
      beta with the previous iteration's m).
    - Unlike the original code's later fixed-point version, whose evidence keeps d/2 log alpha
      with only the r nonzero eigenvalues in log|A| (wrong by (d - r)/2 log alpha whenever d > n or
      the features are rank deficient), log|A| here counts all d eigenvalues.
    - Classes are the distinct label values (the original code takes 0..max(label), so a missing
      id would add an all-zero column to the average).
    """
    f = _features(features)
    codes, counts = _labels(labels, f.shape[0])
    n, d = f.shape
    u, s = _svd(f)
    sigma = s ** 2
    x = u.T @ _one_hot(codes, counts.size)   # [r, K]: each target column in F's left singular basis
    x2 = x ** 2
    res_x2 = np.maximum(counts - x2.sum(axis=0), 0.0)  # |y|^2 = images in the class (one-hot)
    evidences, unconverged = [], 0
    for k in range(counts.size):
        evidence, converged = _logme_class(x2[:, k], float(res_x2[k]), sigma, n, d, eps, tol, max_iter)
        evidences.append(evidence)
        unconverged += not converged
    if unconverged:
        warnings.warn(f"LogME: the alpha/beta iteration did not converge for {unconverged} of "
                      f"{counts.size} classes within {max_iter} iterations", RuntimeWarning, stacklevel=2)
    return float(np.mean(evidences))


# --------------------------------------------------------------------------------------------
# LEEP and NCE


def _joint(codes: np.ndarray, classes: int, weights: np.ndarray) -> np.ndarray:
    """Empirical joint P(y, z) [classes, Z]: (1/n) sum over the images of class y of weights[i, z]."""
    joint = np.zeros((classes, weights.shape[1]))
    np.add.at(joint, codes, weights)
    return joint / codes.size


def leep(source_probs, labels) -> float:
    """LEEP, the log expected empirical prediction.

    Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020. With theta(x_i) the source classifier's probabilities
    over its Z classes on target image i:

        P(y, z) = (1/n) sum_{i: y_i = y} theta(x_i)_z,   P(z) = sum_y P(y, z),
        P(y | z) = P(y, z) / P(z),
        LEEP = (1/n) sum_i log( sum_z P(y_i | z) theta(x_i)_z )  <= 0.

    Rows of ``source_probs`` must be probabilities (non-negative, summing to 1 within 1e-3; they
    are renormalized exactly in float64). A source class no image puts mass on (P(z) = 0) gets
    P(y | z) = 0 rather than 0/0: it is multiplied by theta_z = 0 for every image anyway. The inner
    sum is never 0 (image i itself contributes to P(y_i, z) wherever theta(x_i)_z > 0), so the score
    is finite.
    """
    probs = _probabilities(source_probs)
    codes, counts = _labels(labels, probs.shape[0])
    joint = _joint(codes, counts.size, probs)
    p_z = joint.sum(axis=0)
    conditional = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)  # P(y | z)
    expected = np.sum(probs * conditional[codes], axis=1)  # sum_z P(y_i | z) theta(x_i)_z
    return float(np.mean(np.log(expected)))


def nce(source_labels, labels) -> float:
    """NCE, the negative conditional entropy -H(Y | Z) of the target labels given the source
    classifier's hard predictions.

    Tran, Nguyen & Hassner, "Transferability and Hardness of Supervised Classification Tasks",
    ICCV 2019. From the empirical joint of (target label y, source label z) over the n images,

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) )  <= 0,

    with 0 log 0 = 0 (only cells with images count). ``source_labels`` are the source network's
    predicted classes (the argmax of its probabilities) on the target images; a source that
    predicts one class for every image is allowed (NCE = -H(Y)).
    """
    z_codes, z_counts = _codes(source_labels, "source_labels", None, min_classes=1)
    codes, counts = _labels(labels, z_codes.size)
    joint = _joint(codes, counts.size, _one_hot(z_codes, z_counts.size))
    p_z = np.broadcast_to(joint.sum(axis=0), joint.shape)
    cells = joint > 0
    return float(np.sum(joint[cells] * np.log(joint[cells] / p_z[cells])))


def _nce_from_probs(source_probs, labels) -> float:
    """NCE with the source labels taken as the argmax of the source classifier's probabilities."""
    return nce(np.argmax(_probabilities(source_probs), axis=1), labels)


# --------------------------------------------------------------------------------------------
# H-scores


@dataclasses.dataclass(frozen=True)
class CentredSVD:
    """The centred features Fc = F - mean and their economy SVD (U_r, s_r): what both H-scores
    need, computed once per layer by :func:`feature_scores`."""

    centred: np.ndarray
    u: np.ndarray
    s: np.ndarray

    @classmethod
    def of(cls, features) -> "CentredSVD":
        f = _features(features)
        centred = f - f.mean(axis=0)
        return cls(centred, *_svd(centred))


def _ledoit_wolf_shrinkage(svd: CentredSVD) -> float:
    """``sklearn.covariance.ledoit_wolf_shrinkage(Fc, assume_centered=True)``, term for term, from
    the singular values: ||Fc^T Fc||_F^2 = sum s^4 and tr(Fc^T Fc) = sum s^2, and sum_ij of
    (Fc^2)^T Fc^2 is sum over images of |row|^4. sklearn forms the d x d products in blocks,
    O(n d^2): 221 s for the 7 layers of flattened cifar8 maps (d up to 8,192) against seconds here."""
    n, d = svd.centred.shape
    trace = float(np.sum(svd.s ** 2)) / n            # tr(S), S = Fc^T Fc / n
    mu = trace / d
    delta_ = float(np.sum(svd.s ** 4)) / n ** 2      # ||S||_F^2
    beta_ = float(np.sum(np.sum(svd.centred ** 2, axis=1) ** 2))
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu ** 2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def _class_mean_quadratic(features, labels, shrink: bool, svd: CentredSVD | None = None) -> float:
    """sum_c (n_c/n) mu_c^T C^-1 mu_c for the centred features' class means mu_c, which is
    tr(C^-1 cov(E[f|y])) with cov(E[f|y]) = sum_c (n_c/n) mu_c mu_c^T (the global mean is 0).

    Computed in the SVD of the centred features Fc = U S V^T: mu_c = (1/n_c) sum_{i in c} U_i S V^T
    lies in span(V), where C = V diag(lambda) V^T + (span(V)'s complement), so only the r nonzero
    directions matter: mu_c . v_j = s_j (1/n_c) sum_{i in c} U_ij. `svd`: that of `features`,
    when the caller already has it."""
    svd = svd or CentredSVD.of(features)
    codes, counts = _labels(labels, svd.centred.shape[0])
    n, d = svd.centred.shape
    u, s = svd.u, svd.s
    if s.size == 0:
        return 0.0  # constant features: no between-class variance to explain
    variance = s ** 2 / n                     # eigenvalues of the empirical covariance (1/n)
    if shrink:
        alpha = _ledoit_wolf_shrinkage(svd)
        mu = float(np.sum(variance)) / d      # Ledoit-Wolf target: (tr(S)/d) I
        variance = (1.0 - alpha) * variance + alpha * mu
        between_scale = 1.0 - alpha
    else:
        between_scale = 1.0
    class_sums = np.zeros((counts.size, s.size))
    np.add.at(class_sums, codes, u)
    projections = class_sums / counts[:, None] * s          # [C, r]: mu_c . v_j
    weights = counts / n
    return float(between_scale * np.sum(weights[:, None] * projections ** 2 / variance))


def hscore(features, labels) -> float:
    """H-score: tr( cov(f)^+ cov(E[f | y]) ), a matrix product, with the Moore-Penrose
    pseudo-inverse.

    Bao, Li, Huang, Zhang, Zheng, Zamir & Guibas, "An Information-Theoretic Approach to
    Transferability in Task Transfer Learning", ICIP 2019: H(f) = tr(cov(f(X))^-1
    cov(E_{P_X|Y}[f(X) | Y])). Features are centred; cov(f) = Fc^T Fc / n and cov(E[f | y]) =
    sum_c (n_c / n) mu_c mu_c^T for the class means mu_c (any common normalization, 1/n or
    1/(n - 1), cancels in the ratio). cov(f)'s pseudo-inverse drops the directions whose singular
    value is below s_max * max(n, d) * machine eps (rank-deficient features, d > n).

    The result is a sum of non-negative terms, so 0 <= H <= min(C - 1, rank). With d >= n the
    within-class scatter cannot span the feature space and H saturates at C - 1 whatever the
    features (the instability the shrinkage form below addresses).

    (google-research's ``stable_transfer`` computes ``trace(pinv(cov_f) * cov_g)``, an element-wise
    product, i.e. sum_j pinv_jj cov_g_jj; this is the matrix product the definition means.)
    """
    return _class_mean_quadratic(features, labels, shrink=False)


def hscore_shrinkage(features, labels) -> float:
    """The shrinkage H-score H_alpha of Ibrahim, Ponomareva & Mazumder, "Newer is not always better:
    Rethinking transferability metrics, their peculiarities, stability and performance"
    (OpenReview iz_Wwmfquno):

        H_alpha(f) = tr( cov_alpha(f)^-1 (1 - alpha) cov(E[f | y]) ),
        cov_alpha(f) = (1 - alpha) cov(f) + alpha (tr(cov(f)) / d) I,

    with alpha the Ledoit-Wolf (2004) shrinkage intensity of the centred features
    (``sklearn.covariance.ledoit_wolf_shrinkage``'s, which uses the 1/n empirical covariance,
    computed from the SVD: see ``_ledoit_wolf_shrinkage``).
    Features are centred first; cov(f) = Fc^T Fc / n and cov(E[f | y]) = sum_c (n_c / n) mu_c
    mu_c^T, both 1/n, so the two normalizations agree (Transfer-Learning-Library's
    ``regularized_h_score`` pairs the 1/n Ledoit-Wolf covariance with ``np.cov``'s 1/(n - 1) between-
    class covariance, a factor n / (n - 1)). For alpha > 0 cov_alpha is positive definite; alpha = 0
    falls back to the plain H-score's pseudo-inverse. The result is >= 0.
    """
    return _class_mean_quadratic(features, labels, shrink=True)


# --------------------------------------------------------------------------------------------
# TransRate


def _coding_rate(z: np.ndarray, eps: float) -> float:
    """R(Z, eps) = 1/2 log det(I_d + 1/(n eps) Z^T Z), from the eigenvalues of the smaller Gram
    matrix (Z Z^T when n < d: det(I_d + c Z^T Z) = det(I_n + c Z Z^T))."""
    n, d = z.shape
    gram = z @ z.T if n < d else z.T @ z
    eigenvalues = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    return 0.5 * float(np.sum(np.log1p(eigenvalues / (n * eps))))


def transrate(features, labels, eps: float = 1e-4) -> float:
    """TransRate: the coding rate of all features minus the class-weighted coding rates of each
    class's features, an estimate of the mutual information between features and labels.

    Huang, Huang, Rong, Yang & Wei, "Frustratingly Easy Transferability Estimation", ICML 2022:

        R(Z, eps) = 1/2 log det( I_d + 1 / (n eps) Z^T Z ),
        TransRate = R(Z, eps) - sum_c (n_c / n) R(Z_c, eps),

    where Z_c are the n_c rows of class c (each R uses its own row count) and ``eps`` plays the
    paper's epsilon^2 (the official code's argument is "the value of eps^2", default 1e-4). This is
    the paper's form: Ma et al.'s lossy coding rate has d / (n eps^2), but TransRate drops the d
    (paper and official code alike), and the conditional rate weights class c by n_c / n (the
    official layer-selection code, ``np.sum(rzc * nc / n)``; its short demo listing averages the
    classes uniformly, 1/K, which breaks R(Z) >= R(Z | Y) for unbalanced classes). An earlier
    version of this function kept the d, which made eps effectively eps / d and so favoured
    layers by their width: d differs 50-fold between conv1 and fc7.

    Preprocessing, stated because the score depends on feature scale: Z is centred (the mean
    image's features subtracted), then scaled by one factor so that the mean squared row norm is 1
    (|Z|_F^2 = n, i.e. the eigenvalues of Z^T Z / n sum to 1, as the official layer-selection code's
    ``normalize_eigz``). With that, eps is a distortion relative to the features' own variance and
    the score is invariant to a global rescaling of a layer's features (needed to compare layers).
    Class rows are taken from this globally centred Z, not re-centred per class. With the n_c / n
    weights, the concavity of log det gives TransRate >= 0; features that are constant across
    images have TransRate 0. Not done: the official layer-selection code's extra division of both
    rates by rank(Z), which is not in the paper's definition.
    Log-determinants are computed from the eigenvalues of the smaller Gram matrix (n x n when
    d > n), clipped at 0, with log1p.
    """
    f = _features(features)
    codes, counts = _labels(labels, f.shape[0])
    if not eps > 0:
        raise UserError(f"transrate eps {eps!r} invalid; allowed: a number > 0")
    n = f.shape[0]
    z = f - f.mean(axis=0)
    scale = np.sqrt(np.sum(z ** 2) / n)
    if scale == 0.0:
        return 0.0
    z = z / scale
    conditional = sum(counts[c] / n * _coding_rate(z[codes == c], eps) for c in range(counts.size))
    return float(_coding_rate(z, eps) - conditional)


# --------------------------------------------------------------------------------------------
# registry


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered score: ``compute(x, labels)`` with x the per-image features [N, D] when
    ``needs`` is FEATURES, or the source classifier's probabilities [N, Z] when SOURCE_PROBS."""

    name: str
    needs: str
    compute: Callable[[np.ndarray, np.ndarray], float]
    reference: str

    def __call__(self, x, labels) -> float:
        return self.compute(x, labels)


METRICS: dict[str, Metric] = {
    metric.name: metric for metric in (
        Metric("logme", FEATURES, logme, "You et al., ICML 2021"),
        Metric("leep", SOURCE_PROBS, leep, "Nguyen et al., ICML 2020"),
        Metric("nce", SOURCE_PROBS, _nce_from_probs, "Tran et al., ICCV 2019"),
        Metric("hscore", FEATURES, hscore, "Bao et al., ICIP 2019"),
        Metric("hscore-lw", FEATURES, hscore_shrinkage, "Ibrahim et al., Ledoit-Wolf shrinkage"),
        Metric("transrate", FEATURES, transrate, "Huang et al., ICML 2022"),
    )
}


def get_metric(name: str) -> Metric:
    """The registered metric called ``name`` (case and surrounding spaces ignored)."""
    key = str(name).strip().lower()
    if key not in METRICS:
        raise UserError(f"metric {name!r} unknown; allowed: {', '.join(METRICS)}")
    return METRICS[key]


# The feature metrics that read the centred features' SVD: computed once per layer for both.
_CENTRED_SVD = {"hscore": lambda f, y, svd: _class_mean_quadratic(f, y, shrink=False, svd=svd),
                "hscore-lw": lambda f, y, svd: _class_mean_quadratic(f, y, shrink=True, svd=svd)}


def feature_scores(features, labels, names) -> dict[str, tuple[float, float]]:
    """{name: (score, seconds)} of the registered feature metrics `names` on one layer's features,
    H-score and its shrinkage form sharing one SVD of the centred features (its time is counted
    in the first of them). LogME decomposes the features uncentred, as its paper does, and
    TransRate the Gram matrices of the classes as well, so they compute their own."""
    import time

    out, svd = {}, None
    for name in names:
        metric = get_metric(name)
        if metric.needs != FEATURES:
            raise UserError(f"metric {name!r} reads source probabilities, not features; allowed here: "
                            f"{', '.join(m.name for m in METRICS.values() if m.needs == FEATURES)}")
        t = time.perf_counter()
        if metric.name in _CENTRED_SVD:
            svd = svd or CentredSVD.of(features)
            value = _CENTRED_SVD[metric.name](features, labels, svd)
        else:
            value = metric(features, labels)
        out[metric.name] = (float(value), time.perf_counter() - t)
    return out

