"""Correspondence analysis (Zeiler & Fergus §4.3, Fig. 8, Table 1): does masking the same object
part in different images change a layer's features in the same way?

For image i and a masked part, eps_i = x_i - x~_i, the layer-l features of the original image minus
those of the image with the part's box filled with the dataset's mean colour (the grey of the
mean-subtracted input, as in occlusion). For every pair i != j the normalized Hamming distance
H(sign eps_i, sign eps_j) / D (D: the layer's feature count) is the share of features whose sign of
change differs; Delta_l = sum over ordered pairs i != j of those distances (the paper's sum), and
Table 1 shows the mean and standard deviation over the pairs ("mean feature sign change"). Lower
means the part is masked more consistently: a correspondence between the parts of different
images. The control masks, in each image, a box of the same size as the part's at a uniformly
random place (`random` draws per part, seeded); its pairs are pooled over draws and parts.

The parts file (YAML) maps each image file, relative to the images directory, to its parts; each
part is a box [x0, y0, x1, y1] in that image's own pixel coordinates (x right, y down; x0, y0
inclusive, x1, y1 exclusive: 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height). Every image names
the same parts:

    dog1.jpg:
      left_eye: [40, 52, 58, 66]
      nose: [60, 80, 84, 100]
    dog2.jpg:
      left_eye: [35, 40, 50, 55]
      nose: [52, 66, 75, 90]
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import yaml

from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError, names_list
from tfxfer.runs.finished import load_run
from tfxfer.visualize.inputs import check_positive, read_images

DEFAULT_LAYERS = ("conv5", "fc7")
RANDOM = "random"


@dataclasses.dataclass(frozen=True)
class Parts:
    images: list[str]  # file names, relative to the images directory, in file order
    names: list[str]  # part names, in the order the first image lists them
    boxes: np.ndarray  # [N images, P parts, 4] x0, y0, x1, y1


def read_parts(path: str | Path) -> Parts:
    """The parts file, checked for shape (not yet against the images' sizes: see check_boxes)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"parts file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"parts file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or len(data) < 2:
        raise UserError(f"parts file {path} must map at least 2 image files to their parts "
                        f"({{image: {{part: [x0, y0, x1, y1]}}}}), got {str(data)[:80]!r}")
    names = None
    boxes = []
    for image, parts in data.items():
        if not isinstance(parts, dict) or not parts:
            raise UserError(f"parts file {path}: image {image!r} must map part names to boxes [x0, y0, x1, y1], "
                            f"got {parts!r}")
        if names is None:
            names = [str(p) for p in parts]
        if sorted(map(str, parts)) != sorted(names):
            raise UserError(f"parts file {path}: image {image!r} has parts {sorted(map(str, parts))}; every image "
                            f"must name the same parts as the first: {sorted(names)}")
        row = []
        for part in names:
            box = parts[part]
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in box)):
                raise UserError(f"parts file {path}: box of part {part!r} in image {image!r} is {box!r}; "
                                "allowed: four whole numbers [x0, y0, x1, y1]")
            row.append(box)
        boxes.append(row)
    if RANDOM in names:
        raise UserError(f"parts file {path}: part name {RANDOM!r} is reserved for the random-box control")
    return Parts([str(i) for i in data], names, np.asarray(boxes, np.int64))


def check_boxes(parts: Parts, images: list[np.ndarray]) -> None:
    for name, image, boxes in zip(parts.images, images, parts.boxes):
        h, w = image.shape[:2]
        for part, (x0, y0, x1, y1) in zip(parts.names, boxes):
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise UserError(f"box [{x0}, {y0}, {x1}, {y1}] of part {part!r} in image {name!r} is outside the "
                                f"image or empty; allowed: 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h}")


def check_layers(model, layers) -> list[str]:
    have = [layer.name for layer in model.layers[1:]]
    names = names_list(layers, "layers")
    for n in names:
        if n not in have:
            raise UserError(f"layer {n!r} is not a layer of this network; allowed: {', '.join(have)}")
    return names


def random_boxes(parts: Parts, images: list[np.ndarray], draws: int, seed: int) -> np.ndarray:
    """[draws, N, P, 4]: in each image, a box of each part's size at a uniformly random place."""
    rng = np.random.default_rng(seed)
    sizes = parts.boxes[..., 2:] - parts.boxes[..., :2]  # [N, P, 2] width, height
    limits = np.array([[im.shape[1], im.shape[0]] for im in images])[:, None, :] - sizes + 1  # [N, P, 2]
    corners = np.floor(rng.random((draws, *sizes.shape)) * limits).astype(np.int64)
    return np.concatenate([corners, corners + sizes], axis=-1)


def masked(image: np.ndarray, box, fill: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = fill
    return out


def pair_distances(eps: np.ndarray) -> np.ndarray:
    """[N(N-1)/2] normalized Hamming distances between sign(eps_i) and sign(eps_j), i < j."""
    signs = np.sign(eps.reshape(len(eps), -1))
    i, j = np.triu_indices(len(eps), k=1)
    return np.mean(signs[i] != signs[j], axis=1)


@dataclasses.dataclass
class Row:
    layer: str
    part: str
    distances: np.ndarray  # pair distances, pooled over `sets`
    sets: int = 1  # sets of N masked images behind them (random draws x parts for the control)

    @property
    def delta(self) -> float:
        """The paper's Delta: the sum over ordered pairs i != j, twice the sum over i < j; for the
        control, averaged over its sets."""
        return float(2 * self.distances.sum() / self.sets)


def correspondence(run, images: list[np.ndarray], parts: Parts, layers, draws: int = 10, seed: int = 0,
                   batch_size: int = 256) -> list[Row]:
    """Rows per (layer, part) and per layer for the random control. All masked copies go through
    the network together, `batch_size` at a time."""
    fill = np.round(np.asarray(run.norm.mean)).astype(np.uint8)
    n, p = parts.boxes.shape[:2]
    control = random_boxes(parts, images, draws, seed)  # [R, N, P, 4]
    copies = list(images)
    copies += [masked(images[i], parts.boxes[i, k], fill) for k in range(p) for i in range(n)]
    copies += [masked(images[i], control[r, i, k], fill) for r in range(draws) for k in range(p) for i in range(n)]
    outputs = run.predict(layers, run.inputs(copies), batch_size)
    rows = []
    for layer, feats in zip(layers, outputs):
        original, rest = feats[:n], feats[n:].reshape(-1, n, *feats.shape[1:])  # [sets, N, ...]
        eps = original[None] - rest
        for k, part in enumerate(parts.names):
            rows.append(Row(layer, part, pair_distances(eps[k])))
        pooled = np.concatenate([pair_distances(e) for e in eps[p:]])
        rows.append(Row(layer, RANDOM, pooled, sets=draws * p))
    return rows


def table_markdown(rows: list[Row], run_id: str, n_images: int, draws: int) -> str:
    layers = list(dict.fromkeys(r.layer for r in rows))
    parts = list(dict.fromkeys(r.part for r in rows))
    cell = {(r.layer, r.part): r for r in rows}
    lines = [f"# Correspondence analysis: {run_id}", "",
             (f"Mean feature sign change (normalized Hamming distance between sign(eps_i) and sign(eps_j), "
              f"mean ± std over the {n_images * (n_images - 1) // 2} pairs of {n_images} images; random: pooled "
              f"over {draws} draws per part of same-size boxes). Lower: tighter correspondence."), "",
             "| occlusion location | " + " | ".join(f"mean feature sign change, {layer}" for layer in layers) + " |",
             "|---|" + "---|" * len(layers)]
    for part in parts:
        lines.append(f"| {part} | " + " | ".join(
            f"{cell[(layer, part)].distances.mean():.3f} ± {cell[(layer, part)].distances.std():.3f}"
            for layer in layers) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["layer", "part", "mean", "std", "pairs", "delta"])
    for r in rows:
        writer.writerow([r.layer, r.part, f"{r.distances.mean():.6f}", f"{r.distances.std():.6f}", len(r.distances),
                         f"{r.delta:.6f}"])
    return buf.getvalue()


def diagnose_correspondence(run_dir, images_dir, parts_file, layers=DEFAULT_LAYERS, draws: int = 10,
                            seed: int = 0, batch_size: int = 256, out=None) -> dict[str, Path]:
    """`tfxfer diagnose correspondence`: correspondence.md (Table 1's shape) and correspondence.csv
    in `out` (default <run>/diagnose/correspondence). Every input is checked before anything runs."""
    check_positive(random=draws, batch_size=batch_size)
    parts = read_parts(parts_file)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"images directory {str(images_dir)!r} does not exist")
    missing = [name for name in parts.images if not (images_dir / name).is_file()]
    if missing:
        raise UserError(f"image {missing[0]!r} listed in {parts_file} is not in {images_dir}")
    images = read_images([images_dir / name for name in parts.images])
    check_boxes(parts, images)
    run = load_run(run_dir, float32=True)
    run.require_registry("diagnose correspondence")
    layers = check_layers(run.model, layers)
    rows = correspondence(run, images, parts, layers, draws, seed, batch_size)
    out = Path(out) if out is not None else run.run_dir / "diagnose" / "correspondence"
    written = {"md": out / "correspondence.md", "csv": out / "correspondence.csv"}
    atomic_write_text(written["md"], table_markdown(rows, run.record["run_id"], len(images), draws))
    atomic_write_text(written["csv"], table_csv(rows))
    return written
