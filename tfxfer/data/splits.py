"""Split a dataset's classes into two tasks, A and B, and carve seeded, stratified subsets.

A `Split` only names classes, so one split can be saved, hashed and re-applied to any copy of
the dataset. Three kinds:

* `random`: a seeded permutation of all classes cut into two halves (Yosinski et al.'s 500/500
  ImageNet split). With an odd class count A gets the extra class.
* `dissimilar`: A and B meant to differ in kind, e.g. CIFAR-10 `vehicles` vs `animals`.
* `explicit`: any A and B the user chooses.

For these two, A (required) and B (default: all classes not in A) are a family name (`families`)
or a list of family and class names; a family name wins over a class of the same name. The two
kinds build the same split and differ only in the label they carry into results.

Each task's labels are 0..k-1 in the order of `Split.classes(task)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from tfxfer.data.types import ImageData
from tfxfer.errors import UserError

KINDS = ("random", "dissimilar", "explicit")
TASKS = ("A", "B")
PARTS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    kind: str  # "random" | "dissimilar" | "explicit"
    seed: int | None  # the permutation seed of a `random` split; None otherwise
    A: tuple[str, ...]  # class names of task A, in label order
    B: tuple[str, ...]

    @property
    def hash(self) -> str:
        """12 hex digits of a sha256 over kind and both class lists (in label order).

        The seed is left out on purpose: two seeds that happen to draw the same classes give the
        same tasks, and results keyed by this hash should be shared.
        """
        payload = json.dumps([self.kind, list(self.A), list(self.B)])
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def classes(self, task: str) -> tuple[str, ...]:
        if task not in TASKS:
            raise UserError(f"task {task!r} is unknown; allowed: {', '.join(TASKS)}")
        return self.A if task == "A" else self.B


def make_split(
    class_names: Sequence[str],
    kind: str = "random",
    seed: int = 0,
    A: str | Iterable[str] | None = None,
    B: str | Iterable[str] | None = None,
    families: Mapping[str, Sequence[str]] | None = None,
) -> Split:
    """Build a validated split of `class_names` (see the module docstring for the kinds)."""
    class_names = list(class_names)
    families = dict(families or {})
    if kind not in KINDS:
        raise UserError(f"split kind {kind!r} is unknown; allowed: {', '.join(KINDS)}")
    if kind == "random":
        if A is not None or B is not None:
            raise UserError(
                "a random split draws its own classes; A and B are only for the dissimilar and explicit kinds"
            )
        if len(class_names) < 2:
            raise UserError(f"a random split needs at least 2 classes; the dataset has {len(class_names)}")
        if seed is None:  # numpy would draw an unrepeatable split
            raise UserError("a random split needs a seed; allowed: an integer")
        order = np.random.default_rng(seed).permutation(len(class_names))
        cut = (len(class_names) + 1) // 2
        # Within a task, keep the dataset's class order so labels read naturally.
        a_idx, b_idx = sorted(order[:cut]), sorted(order[cut:])
        return Split("random", int(seed), tuple(class_names[i] for i in a_idx), tuple(class_names[i] for i in b_idx))

    if A is None:
        hint = f" or a family name ({', '.join(families)})" if families else ""
        raise UserError(f"a {kind} split needs task A: a list of class names{hint}")
    a = _resolve(A, "A", class_names, families)
    b = [c for c in class_names if c not in a] if B is None else _resolve(B, "B", class_names, families)
    overlap = [c for c in a if c in b]
    if overlap:
        raise UserError(f"tasks A and B share classes {', '.join(overlap)}; a class may belong to one task only")
    if not b:
        raise UserError("task B is empty: task A already holds every class")
    return Split(kind, None, tuple(a), tuple(b))


def _resolve(spec: str | Iterable[str], task: str, class_names: list[str], families: dict) -> list[str]:
    """Expand family names and check class names."""
    entries = [spec] if isinstance(spec, str) else list(spec)
    resolved: list[str] = []
    for entry in entries:
        if entry in families:
            members = list(families[entry])
        elif entry in class_names:
            members = [entry]
        else:
            allowed = (f"families {', '.join(families)} or " if families else "") + f"classes {', '.join(class_names)}"
            raise UserError(f"task {task} names {entry!r}, which is not in the dataset; allowed: {allowed}")
        for c in members:
            if c not in class_names:
                raise UserError(f"family {entry!r} lists class {c!r}, which is not in the dataset")
            if c in resolved:
                raise UserError(f"task {task} lists class {c!r} twice")
            resolved.append(c)
    if not resolved:
        raise UserError(f"task {task} is empty; name at least one class")
    return resolved


def task_arrays(data: ImageData, split: Split, task: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """The images of `task`'s classes from `part` ("train"/"test"), labels remapped to 0..k-1."""
    if part not in PARTS:
        raise UserError(f"part {part!r} is unknown; allowed: {', '.join(PARTS)}")
    classes = split.classes(task)
    missing = [c for c in classes if c not in data.class_names]
    if missing:
        raise UserError(
            f"split {split.hash} names classes {', '.join(missing)} that dataset {data.name!r} does not have"
        )
    x, y = (data.train_x, data.train_y) if part == "train" else (data.test_x, data.test_y)
    # Lookup table from the dataset's label to the task's label; -1 marks classes of the other task.
    remap = np.full(len(data.class_names), -1, dtype=np.int64)
    for new, name in enumerate(classes):
        remap[data.class_names.index(name)] = new
    new_y = remap[y]
    keep = new_y >= 0
    return x[keep], new_y[keep]


def select_per_class(y: np.ndarray, count: Callable[[int], int], seed: int) -> np.ndarray:
    """Indices (ascending) of the first `count(n_c)` samples of each class in a seeded order.

    The one helper behind validation carving, held-out test sets and per-class caps, so all of
    them are stratified and reproducible the same way.
    """
    y = np.asarray(y)
    order = np.random.default_rng(seed).permutation(len(y))
    shuffled = y[order]
    picked = [np.zeros(0, dtype=np.int64)]
    for c in np.unique(y):
        members = order[shuffled == c]
        picked.append(members[: count(len(members))])
    return np.sort(np.concatenate(picked))


def carve_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split (x, y) into (train_x, train_y, val_x, val_y), holding out `fraction` of each class.

    Every class with at least two samples keeps at least one on each side, so both sides see
    every class.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"held-out fraction {fraction} is out of range; allowed: 0 < fraction < 1")

    def held_out(n: int) -> int:
        return min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0

    val = select_per_class(y, held_out, seed)
    train = np.setdiff1d(np.arange(len(y)), val, assume_unique=True)
    return x[train], y[train], x[val], y[val]
