"""Linear classifiers on frozen features (scikit-learn): multinomial softmax and a linear SVM, both
L2-regularized, features standardized, the regularization strength chosen by cross-validation on
the training images only; scored as the mean of per-class accuracies."""
from __future__ import annotations

import tempfile

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from tfxfer.errors import UserError, names_list

CLASSIFIERS = ("softmax", "svm")
# Inverse L2 strengths cross-validated over, for features standardized and then divided by the
# square root of their dimension (about unit length, so one grid suits a 256-d fc7 and an 8192-d
# conv1). The SVM's stops lower: with more dimensions than images the classes are separable,
# larger C only nears the hard-margin solution, and liblinear takes minutes per fit to get there.
C_GRID = {"softmax": (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0), "svm": (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)}
CV_FOLDS = 3  # at most; never more than the k training images per class


def parse_classifiers(classifiers: list[str] | None) -> list[str]:
    names = list(CLASSIFIERS) if classifiers is None else names_list(classifiers, "classifiers")
    bad = [n for n in names if n not in CLASSIFIERS]
    if bad or not names:
        raise UserError(f"classifier {','.join(bad or names) or '(none)'!r} unknown; allowed: one or both of "
                        f"{', '.join(CLASSIFIERS)}")
    return sorted(set(names), key=CLASSIFIERS.index)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes]: the fraction of each class's test images predicted as that class (NaN if it has none)."""
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(axis=1)


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """The paper's score: every class counts the same, however many test images it has."""
    return float(np.nanmean(per_class_accuracy(y_true, y_pred, num_classes)))


def _per_dimension(x: np.ndarray, dim: int) -> np.ndarray:
    return x * np.float32(1 / np.sqrt(dim))


def pipeline(classifier: str, seed: int, n_train: int, dim: int, C: float = 1.0, memory=None) -> Pipeline:
    if classifier == "softmax":
        clf = LogisticRegression(C=C, max_iter=3000, random_state=seed)  # multinomial for > 2 classes
    else:
        clf = LinearSVC(C=C, max_iter=20000, random_state=seed)
    steps = [("scale", StandardScaler()),
             ("unit", FunctionTransformer(_per_dimension, kw_args={"dim": dim}))]
    if dim > n_train:
        # An L2-penalized linear model's weights lie in the span of its training rows, so rotating
        # onto that span (PCA keeping every component) gives the same predictions, far faster when
        # there are fewer images than features (a flattened conv map).
        steps.append(("span", PCA(svd_solver="full", random_state=seed)))
    return Pipeline([*steps, ("clf", clf)], memory=memory)


def fit_probe(classifier: str, x: np.ndarray, y: np.ndarray, seed: int):
    """(the fitted pipeline, the chosen C): C by stratified cross-validation on (x, y) alone."""
    per_class = int(np.bincount(y).min())
    # One BLAS thread: these are many small problems, and BLAS threads spinning beside TensorFlow's
    # (or on a shared machine) made them a hundred times slower. The memory keeps each split's
    # fitted scaling and rotation for every C instead of refitting them.
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="tfxfer-probe-") as memory:
        pipe = pipeline(classifier, seed, len(x), x.shape[1], memory=memory)
        if per_class < 2:  # one image per class leaves nothing to validate on
            return pipe.fit(x, y), pipe.get_params()["clf__C"]
        cv = StratifiedKFold(min(CV_FOLDS, per_class), shuffle=True, random_state=seed)
        search = GridSearchCV(pipe, {"clf__C": list(C_GRID[classifier])}, cv=cv, scoring="balanced_accuracy",
                              refit=True)
        search.fit(x, y)
    return search.best_estimator_, search.best_params_["clf__C"]


def probe_accuracy(classifier: str, x, y, test_x, test_y, num_classes: int, seed: int) -> tuple[float, float]:
    """(mean per-class test accuracy, chosen C) of `classifier` fitted on (x, y)."""
    model, C = fit_probe(classifier, x, y, seed)
    with threadpool_limits(1):
        predicted = model.predict(test_x)
    return mean_per_class_accuracy(test_y, predicted, num_classes), C
