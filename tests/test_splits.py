import numpy as np
import pytest

from tfxfer.data.splits import Split, carve_validation, make_split, select_per_class, task_arrays
from tfxfer.data.types import ImageData
from tfxfer.errors import UserError

CLASSES = [f"c{i}" for i in range(10)]
FAMILIES = {"vehicles": ["c0", "c1", "c8", "c9"], "animals": ["c2", "c3", "c4", "c5", "c6", "c7"]}


def _data(per_class: int = 4) -> ImageData:
    """Each image's pixels hold its own index, so tests can tell which images came back."""
    n = per_class * len(CLASSES)
    x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 3)).copy()
    y = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    return ImageData("toy", list(CLASSES), x, y, x[::2].copy(), y[::2].copy(), families=FAMILIES)


def test_random_split_is_disjoint_complete_equal_and_deterministic():
    s = make_split(CLASSES, "random", seed=3)
    assert s.kind == "random" and s.seed == 3
    assert len(s.A) == len(s.B) == 5
    assert not set(s.A) & set(s.B)
    assert sorted(s.A + s.B) == sorted(CLASSES)
    assert make_split(CLASSES, "random", seed=3) == s
    # Within a task classes keep the dataset's order.
    assert list(s.A) == [c for c in CLASSES if c in s.A]


def test_random_split_seeds_differ_and_odd_count_gives_a_the_extra_class():
    draws = {make_split(CLASSES, "random", seed=seed).A for seed in range(5)}
    assert len(draws) > 1
    s = make_split(CLASSES[:7], "random", seed=0)
    assert (len(s.A), len(s.B)) == (4, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="random", A=["c0"]), "random split draws its own classes"),
        (dict(kind="random", seed=None), "needs a seed"),
        (dict(kind="sideways"), "'sideways' is unknown; allowed: random, dissimilar, explicit"),
        (dict(kind="explicit", A=["c0", "nope"]), "'nope'"),
        (dict(kind="explicit", A=["c0", "c1"], B=["c1", "c2"]), "share classes c1"),
        (dict(kind="explicit", A=[]), "task A is empty"),
        (dict(kind="explicit", A=CLASSES), "task B is empty"),
        (dict(kind="explicit"), r"explicit split needs task A: a list of class names or a family name \(vehicles"),
        (dict(kind="dissimilar", B="animals"), "dissimilar split needs task A"),
        (dict(kind="explicit", A=["c0", "c0"]), "'c0' twice"),
    ],
)
def test_make_split_rejects_bad_requests(kwargs, message):
    with pytest.raises(UserError, match=message):
        make_split(CLASSES, families=FAMILIES, **kwargs)


def test_random_split_needs_two_classes():
    with pytest.raises(UserError, match="at least 2 classes"):
        make_split(["only"], "random")


def test_dissimilar_split_by_family_name():
    by_str = make_split(CLASSES, "dissimilar", A="vehicles", families=FAMILIES)
    assert by_str.A == ("c0", "c1", "c8", "c9")
    assert by_str.B == ("c2", "c3", "c4", "c5", "c6", "c7")  # B defaults to the remaining classes
    assert by_str.seed is None
    assert make_split(CLASSES, "dissimilar", A=["vehicles"], B="animals", families=FAMILIES) == by_str
    explicit = make_split(CLASSES, "explicit", A="vehicles", families=FAMILIES)
    assert (explicit.kind, explicit.A, explicit.B) == ("explicit", by_str.A, by_str.B)
    assert explicit.hash != by_str.hash
    # Family names and class names may be mixed.
    mixed = make_split(CLASSES, "dissimilar", A=["vehicles", "c2"], B=["c3"], families=FAMILIES)
    assert mixed.A == ("c0", "c1", "c8", "c9", "c2") and mixed.B == ("c3",)


def test_dissimilar_error_names_families_and_classes():
    with pytest.raises(UserError, match="'plants'.*families vehicles, animals or classes c0"):
        make_split(CLASSES, "dissimilar", A="plants", families=FAMILIES)
    with pytest.raises(UserError, match="family 'odd' lists class 'c99', which is not in the dataset"):
        make_split(CLASSES, "dissimilar", A="odd", families={"odd": ["c0", "c99"]})


def test_hash_is_stable_and_content_based():
    s = make_split(CLASSES, "explicit", A=["c0", "c1"], B=["c2"])
    assert len(s.hash) == 12 and int(s.hash, 16) >= 0
    assert s.hash == Split("explicit", None, ("c0", "c1"), ("c2",)).hash
    # The seed is not content: the same classes hash the same.
    r = make_split(CLASSES, "random", seed=1)
    assert Split("random", 99, r.A, r.B).hash == r.hash
    assert make_split(CLASSES, "random", seed=2).hash != r.hash
    assert Split("explicit", None, ("c1", "c0"), ("c2",)).hash != s.hash  # label order is content


def test_classes_rejects_unknown_task():
    with pytest.raises(UserError, match="'C' is unknown; allowed: A, B"):
        make_split(CLASSES, "random").classes("C")


def test_task_arrays_remaps_labels_in_split_order():
    data = _data()
    s = make_split(CLASSES, "explicit", A=["c7", "c2"], B=["c0"])
    x, y = task_arrays(data, s, "A", "train")
    assert x.shape == (8, 2, 2, 3) and y.dtype == np.int64
    assert sorted(set(y.tolist())) == [0, 1]
    # c7 is label 0, c2 label 1; the pixel value is the image's index in the dataset.
    assert set(x[y == 0][:, 0, 0, 0].tolist()) == {28, 29, 30, 31}
    assert set(x[y == 1][:, 0, 0, 0].tolist()) == {8, 9, 10, 11}
    xt, yt = task_arrays(data, s, "B", "test")
    assert set(yt.tolist()) == {0} and len(xt) == 2
    with pytest.raises(UserError, match="'val' is unknown; allowed: train, test"):
        task_arrays(data, s, "A", "val")
    with pytest.raises(UserError, match="zz"):
        task_arrays(data, Split("explicit", None, ("zz",), ("c0",)), "A", "train")


def test_carve_validation_is_stratified_deterministic_and_disjoint():
    data = _data(per_class=10)
    tx, ty, vx, vy = carve_validation(data.train_x, data.train_y, 0.2, seed=0)
    assert np.bincount(vy).tolist() == [2] * 10 and np.bincount(ty).tolist() == [8] * 10
    ids_t, ids_v = set(tx[:, 0, 0, 0].tolist()), set(vx[:, 0, 0, 0].tolist())
    assert not ids_t & ids_v and len(ids_t | ids_v) == 100
    again = carve_validation(data.train_x, data.train_y, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((tx, ty, vx, vy), again))
    other = carve_validation(data.train_x, data.train_y, 0.2, seed=1)
    assert not np.array_equal(other[2], vx)


def test_carve_validation_keeps_both_sides_of_small_classes():
    y = np.array([0, 0, 1, 2, 2, 2])
    x = np.arange(6)
    _, ty, _, vy = carve_validation(x, y, 0.1, seed=0)
    assert sorted(vy.tolist()) == [0, 2]  # at least one each, the single class-1 image stays in train
    assert sorted(ty.tolist()) == [0, 1, 2, 2]
    with pytest.raises(UserError, match="fraction 1.0 is out of range"):
        carve_validation(x, y, 1.0, seed=0)


def test_select_per_class_caps_each_class():
    y = np.array([0] * 5 + [1] * 2)
    picked = select_per_class(y, lambda n: min(n, 3), seed=0)
    assert np.bincount(y[picked]).tolist() == [3, 2]
    assert np.all(np.diff(picked) > 0)
