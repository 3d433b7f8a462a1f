"""Occlusion sensitivity (Zeiler & Fergus §4.2, Fig. 7): slide a grey square over an image and
watch the classifier and the strongest top-layer feature map.

The square is filled with 0 in the network's input space, i.e. the dataset's mean colour: the grey
of the paper's mean-subtracted inputs. The occluder's centre visits every `stride`-th pixel, so
map cell (i, j) is the square centred in pixels [i*stride, (i+1)*stride) x [j*stride, (j+1)*stride).
All occluded copies of an image are made inside a tf.data pipeline and go through the network in
batches of `batch_size`.

A run whose base is a model file follows its deepest feature map among its cuts instead of conv5
(a one-line error when all its cuts are vectors), and has no deconvnet projection (panel (c)): the
deconvnet runs tfxfer's own conv blocks backwards.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib.colors
import matplotlib.patches
import numpy as np
import tensorflow as tf

from tfxfer.errors import UserError
from tfxfer.runs.finished import FinishedRun, load_run
from tfxfer.visualize import deconv
from tfxfer.visualize.figures import new_figure, publish, save_figure
from tfxfer.visualize.inputs import check_positive, display_images, open_images, output_dir

FEATURE_LAYER = "conv5"


def feature_layer(run: FinishedRun) -> str:
    """The top feature-map layer followed: conv5, or a model-file run's deepest cut with a feature map."""
    if not run.from_file:
        return FEATURE_LAYER
    maps = [n for n in run.cuts if len(run.output(n).shape) == 4]
    if not maps:
        raise UserError(f"visualize occlusion follows a feature map [H, W, C]; {run.run_id}'s cuts "
                        f"{', '.join(run.cuts)} are all vectors")
    return maps[-1]


def occluder_boxes(image_size: int, size: int, stride: int) -> np.ndarray:
    """[P, 4] boxes (top, bottom, left, right), rows of the map first, each clipped to the image."""
    centres = np.arange(stride // 2, image_size, stride)
    lo = np.clip(centres - size // 2, 0, image_size)
    hi = np.clip(centres - size // 2 + size, 0, image_size)
    ys, xs = np.meshgrid(np.arange(len(centres)), np.arange(len(centres)), indexing="ij")
    return np.stack([lo[ys], hi[ys], lo[xs], hi[xs]], axis=-1).reshape(-1, 4).astype(np.int32)


def occluded_copies(x: np.ndarray, boxes: np.ndarray) -> tf.data.Dataset:
    """One copy of the network input x [S, S, 3] per box, the box set to 0 (the mean colour)."""
    image = tf.constant(x, tf.float32)
    rows = tf.range(x.shape[0])[:, None, None]
    cols = tf.range(x.shape[1])[None, :, None]

    def occlude(box):
        inside = (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])
        return tf.where(inside, 0.0, image)

    return tf.data.Dataset.from_tensor_slices(boxes).map(occlude, num_parallel_calls=tf.data.AUTOTUNE,
                                                         deterministic=True)


@dataclasses.dataclass
class OcclusionMaps:
    label: int  # the class whose probability `probability` maps: the true one, else the top one
    probability: np.ndarray  # [n, n] probability of `label` with the occluder at each position
    top_label: np.ndarray  # [n, n] most probable class
    feature_map: int  # the conv5 (feature_layer) map with the strongest activation in the unoccluded image
    activation: np.ndarray  # [n, n] that map's activation summed over its positions
    unoccluded_probability: float
    unoccluded_activation: float


def occlusion_maps(run: FinishedRun, x: np.ndarray, label: int | None, size: int, stride: int,
                   batch_size: int) -> OcclusionMaps:
    """The three maps of Fig. 7 for one network input x [S, S, 3]."""
    check_positive(size=size, stride=stride, batch_size=batch_size)
    layers = [feature_layer(run), "logits"]
    features, logits = run.predict(layers, x[None], batch_size)
    features = features[0]
    feature_map = int(np.argmax(np.max(features, axis=(0, 1))))
    probs = tf.nn.softmax(logits, axis=-1).numpy()[0]
    label = int(np.argmax(probs)) if label is None else label
    boxes = occluder_boxes(x.shape[0], size, stride)
    occluded_features, occluded_logits = run.predict(layers, occluded_copies(x, boxes), batch_size)
    n = math.isqrt(len(boxes))
    occluded_probs = tf.nn.softmax(occluded_logits, axis=-1).numpy()
    return OcclusionMaps(
        label=label,
        probability=occluded_probs[:, label].reshape(n, n),
        top_label=occluded_probs.argmax(axis=-1).reshape(n, n),
        feature_map=feature_map,
        activation=occluded_features[..., feature_map].sum(axis=(1, 2)).reshape(n, n),
        unoccluded_probability=float(probs[label]),
        unoccluded_activation=float(features[..., feature_map].sum()),
    )


def strongest_projection(model, x: np.ndarray, feature_map: int) -> np.ndarray:
    """Deconvnet projection of the strongest activation of conv5 map `feature_map` (Fig. 7 (c))."""
    out, traces = deconv.forward(model, x[None], FEATURE_LAYER)
    where = int(tf.argmax(tf.reshape(out[0, ..., feature_map], (-1,))))
    row, col = divmod(where, out.shape[2])
    top = deconv.one_activation(out, np.array([row], np.int32), np.array([col], np.int32),
                                np.array([feature_map], np.int32))
    return deconv.project(top, traces).numpy()[0]


def occlusion_figure(run, xs: np.ndarray, names: list[str], labels: list[int | None], size: int, stride: int,
                     batch_size: int, path: str | Path) -> Path:
    """One row per image: image, (b) conv5 map activation, (c) its projection, (d) class probability,
    (e) most probable label, each as a function of the occluder's position."""
    classes = list(run.class_names)
    s = run.spec.input_size
    fig = new_figure(16, 3.2 * len(xs) + 0.5)
    fig.suptitle(f"{run.record['run_id']}: occlusion by a {size}x{size} grey square, stride {stride}")
    label_colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    label_cmap = matplotlib.colors.ListedColormap([label_colours(i % label_colours.N) for i in range(len(classes))])
    axes = fig.subplots(len(xs), 5, squeeze=False)
    for row, x, name, label in zip(axes, xs, names, labels):
        maps = occlusion_maps(run, x, label, size, stride, batch_size)
        n = maps.probability.shape[0]
        extent = (0, n * stride, n * stride, 0)
        image = display_images(run, x)
        row[0].imshow(image)
        row[0].add_patch(matplotlib.patches.Rectangle((s / 2 - size / 2 - 0.5, s / 2 - size / 2 - 0.5), size, size,
                                                      facecolor="0.5", edgecolor="white"))
        row[0].set_title(f"{name}\ntrue: {classes[label] if label is not None else '?'}", fontsize=9)
        im = row[1].imshow(maps.activation, cmap="jet", extent=extent)
        fig.colorbar(im, ax=row[1], shrink=0.8)
        row[1].set_title(f"(b) {feature_layer(run)} map {maps.feature_map}: total activation\n"
                         f"(unoccluded {maps.unoccluded_activation:.1f})", fontsize=9)
        if run.from_file:
            row[2].text(0.5, 0.5, "(c) no deconvnet projection:\nthe base is a model file", ha="center",
                        va="center", fontsize=9, transform=row[2].transAxes)
        else:
            p = strongest_projection(run.model, x, maps.feature_map)
            row[2].imshow(deconv.display_projection(p))
            row[2].set_title(f"(c) projection of map {maps.feature_map}'s\nstrongest activation", fontsize=9)
        im = row[3].imshow(maps.probability, cmap="jet", vmin=0, vmax=1, extent=extent)
        fig.colorbar(im, ax=row[3], shrink=0.8)
        which = "true" if label is not None else "top"
        row[3].set_title(f"(d) p({classes[maps.label]}), the {which} class\n"
                         f"(unoccluded {maps.unoccluded_probability:.2f})", fontsize=9)
        row[4].imshow(maps.top_label, cmap=label_cmap, vmin=-0.5, vmax=len(classes) - 0.5,
                      interpolation="nearest", extent=extent)
        shown = sorted(set(maps.top_label.ravel().tolist()))
        row[4].legend(handles=[matplotlib.patches.Patch(color=label_cmap(c), label=classes[c]) for c in shown],
                      loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        row[4].set_title("(e) most probable label", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


def draw_occlusion(run_dir: str | Path, images, size: int, stride: int, label: str | None = None,
                   batch_size: int = 256, out: str | Path | None = None,
                   tensorboard: bool = False) -> dict[str, Path]:
    """Fig. 7 for each image file: one row per image in <out>/occlusion.png."""
    check_positive(size=size, stride=stride, batch_size=batch_size)
    run = load_run(run_dir, float32=True)
    feature_layer(run)  # a run with no feature map is refused before anything is computed or written
    xs, names, labels = open_images(run, images, label)
    written = {"occlusion": occlusion_figure(run, xs, names, labels, size, stride, batch_size,
                                             output_dir(run, out) / "occlusion.png")}
    return publish(run, written, tensorboard)
