"""Zeiler & Fergus's deconvnet (§2.1, Fig. 1, 2): what input pattern caused one activation.

Forward, block by block up to the chosen layer, each max-pooling records its *switches* (the
position of the maximum in every pooling region). Then every activation of the layer but one is
set to zero and the result is projected down, block by block in reverse:

  LRN (skipped: the deconvnet passes the signal through unchanged — the paper does not invert
  the contrast normalization either) → unpool (each value goes back to its switch position) →
  ReLU → transposed convolution with the block's own kernel, same stride and padding, no bias
  → the block's zero padding cropped off

until pixel space is reached. `top_activations` finds each feature map's strongest activations
over a dataset, one per image, in batches; `draw_deconv` shows their projections beside the input
patches that the activations see (their receptive fields), as in Fig. 2.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfxfer.errors import UserError
from tfxfer.runs.finished import load_run
from tfxfer.visualize.figures import new_figure, publish, save_figure, tile
from tfxfer.visualize.inputs import CONV_LAYERS, check_conv_layer, check_positive, display_images, output_dir


def max_pool_with_switches(x: tf.Tensor, pool) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras MaxPooling2D `pool` applied to x, and its switches: the flat index (over the whole
    batch tensor) of each pooled maximum."""
    return tf.nn.max_pool_with_argmax(x, ksize=pool.pool_size, strides=pool.strides,
                                      padding=pool.padding.upper(), include_batch_in_index=True)


def unpool(y: tf.Tensor, switches: tf.Tensor, shape) -> tf.Tensor:
    """Put every value of `y` back at its switch position in a zero tensor of the pooling input's
    `shape`; where overlapping regions share a maximum, their values add up (the pooling's transpose)."""
    size = int(np.prod(shape))
    flat = tf.scatter_nd(tf.reshape(switches, (-1, 1)), tf.reshape(y, (-1,)), (size,))
    return tf.reshape(flat, shape)


@dataclasses.dataclass
class Trace:
    """What the forward pass through one conv block recorded for the way down."""

    block: object  # the ConvBlock
    conv_input_shape: tuple  # after the block's zero padding
    conv_output_shape: tuple
    switches: tf.Tensor | None  # None: the block does not pool
    output_shape: tuple


def forward(model, x, layer: str) -> tuple[tf.Tensor, list[Trace]]:
    """The output of conv block `layer` for inputs x, computed block by block with its switches."""
    check_conv_layer(layer)
    x = tf.convert_to_tensor(x, tf.float32)
    traces = []
    for name in CONV_LAYERS[:CONV_LAYERS.index(layer) + 1]:
        block = model.get_layer(name)
        if block.pad is not None:
            x = block.pad(x)
        conv_input_shape = tuple(x.shape)
        x = block.conv(x)  # convolution, bias and ReLU
        if block.bn is not None:  # or convolution, then batch norm (inference mode) and ReLU
            x = block.relu(block.bn(x, training=False))
        conv_output_shape = tuple(x.shape)
        switches = None
        if block.pool is not None:
            x, switches = max_pool_with_switches(x, block.pool)
        if block.norm is not None:
            x = block.norm(x)
        traces.append(Trace(block, conv_input_shape, conv_output_shape, switches, tuple(x.shape)))
    return x, traces


def project(top: tf.Tensor, traces: list[Trace]) -> tf.Tensor:
    """Project feature maps `top` (the shape of the last traced block's output) down to pixel space."""
    r = tf.convert_to_tensor(top, tf.float32)
    for t in reversed(traces):
        conv = t.block.conv
        if t.switches is not None:
            r = unpool(r, t.switches, t.conv_output_shape)
        r = tf.nn.relu(r)
        if t.block.bn is not None:
            r = r * bn_scale(t.block.bn)
        r = tf.nn.conv2d_transpose(r, conv.kernel, output_shape=t.conv_input_shape, strides=conv.strides,
                                   padding=conv.padding.upper())
        if t.block.pad is not None:
            (top_pad, bottom), (left, right) = t.block.pad.padding
            r = r[:, top_pad:r.shape[1] - bottom, left:r.shape[2] - right]
    return r


def bn_scale(bn) -> tf.Tensor:
    """The per-channel gain of a batch norm in inference mode, gamma / sqrt(variance + epsilon): its
    linear part, which the way down goes back through as it does through the conv's kernel (and,
    like the conv's bias, leaves the offset out)."""
    gamma = bn.gamma if bn.scale else 1.0
    return tf.cast(gamma / tf.sqrt(bn.moving_variance + bn.epsilon), tf.float32)


def one_activation(out: tf.Tensor, rows, cols, maps) -> tf.Tensor:
    """Zeros the shape of `out`, except out[b, rows[b], cols[b], maps[b]] for each batch entry b."""
    index = tf.stack([tf.range(len(rows)), rows, cols, maps], axis=1)
    return tf.scatter_nd(index, tf.gather_nd(out, index), tf.shape(out))


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Unit i of a layer sees input pixels [start + i * jump, start + i * jump + size)."""

    start: int
    jump: int
    size: int

    def window(self, i: int, image_size: int) -> tuple[int, int]:
        """The input rows (or columns) [a, b) shown for unit i: its field, moved inside the image."""
        size = min(self.size, image_size)
        a = min(max(self.start + i * self.jump, 0), image_size - size)
        return a, a + size


def _pad_before(n_in: int, n_out: int, kernel: int, stride: int, padding: str) -> int:
    # TensorFlow's "same" puts the smaller half of the padding first.
    return max((n_out - 1) * stride + kernel - n_in, 0) // 2 if padding == "same" else 0


def receptive_field(traces: list[Trace]) -> ReceptiveField:
    """The receptive field of one unit of the last traced block (square kernels and inputs)."""
    start, jump, size = 0, 1, 1
    for t in traces:
        steps = []
        if t.block.pad is not None:
            steps.append((1, 1, t.block.pad.padding[0][0]))
        conv = t.block.conv
        steps.append((conv.kernel_size[0], conv.strides[0],
                      _pad_before(t.conv_input_shape[1], t.conv_output_shape[1], conv.kernel_size[0],
                                  conv.strides[0], conv.padding)))
        if t.block.pool is not None:
            pool = t.block.pool
            steps.append((pool.pool_size[0], pool.strides[0],
                          _pad_before(t.conv_output_shape[1], t.output_shape[1], pool.pool_size[0],
                                      pool.strides[0], pool.padding)))
        for kernel, stride, before in steps:
            start -= before * jump
            size += (kernel - 1) * jump
            jump *= stride
    return ReceptiveField(start, jump, size)


@dataclasses.dataclass
class TopActivations:
    """For each feature map m: its k strongest activations over a dataset, at most one per image."""

    maps: np.ndarray  # [M] feature map indexes
    values: np.ndarray  # [M, k]
    images: np.ndarray  # [M, k] dataset image indexes
    rows: np.ndarray  # [M, k] position in the layer's output
    cols: np.ndarray


def top_activations(model, batches, layer: str, maps, k: int) -> TopActivations:
    """Search batches of network inputs for the top-k activations of each of `maps`."""
    check_conv_layer(layer)
    features = keras.Model(model.input, model.get_layer(layer).output)
    maps = np.asarray(maps)

    values, where = [], []
    for x in batches:
        a = tf.gather(features(x, training=False), maps, axis=-1)
        flat = tf.reshape(a, (tf.shape(a)[0], -1, len(maps)))
        values.append(tf.reduce_max(flat, axis=1).numpy())
        where.append(tf.argmax(flat, axis=1, output_type=tf.int32).numpy())
    values, where = np.concatenate(values).T, np.concatenate(where).T  # [M, N]
    k = min(k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    width = features.output.shape[2]
    flat = np.take_along_axis(where, order, axis=1)
    return TopActivations(maps, np.take_along_axis(values, order, axis=1), order, flat // width, flat % width)


def project_top(run, images: np.ndarray, top: TopActivations, layer: str, batch_size: int):
    """Deconvnet projections [M, k, S, S, 3] of every top activation, and the receptive field."""
    m, k = top.values.shape
    entries = [(top.images[i, j], top.rows[i, j], top.cols[i, j], top.maps[i]) for i in range(m) for j in range(k)]
    projections, field = [], None
    for b in range(0, len(entries), batch_size):
        idx, rows, cols, maps = (np.asarray(c, np.int32) for c in zip(*entries[b:b + batch_size]))
        out, traces = forward(run.model, run.inputs(images[idx]), layer)
        projections.append(project(one_activation(out, rows, cols, maps), traces).numpy())
        field = receptive_field(traces)
    size = projections[0].shape[1]
    return np.concatenate(projections).reshape(m, k, size, size, 3), field


def display_projection(p: np.ndarray) -> np.ndarray:
    # Zero is mid-grey; each projection's contrast is stretched to its own largest magnitude.
    return np.clip(0.5 + p / (2 * max(float(np.abs(p).max()), 1e-12)), 0.0, 1.0)


def deconv_figure(run, images: np.ndarray, top: TopActivations, projections: np.ndarray,
                  field: ReceptiveField, layer: str, source: str, path: str | Path) -> Path:
    """Fig. 2: per feature map, its k projections (left) beside the matching input patches (right)."""
    m, k = top.values.shape
    side = int(np.ceil(np.sqrt(k)))
    size = run.spec.input_size
    cols = max(1, round(np.sqrt(m / 2)))
    rows = -(-m // cols)
    fig = new_figure(3.2 * cols, 1.75 * rows + 0.6)
    fig.suptitle(f"{run.record['run_id']} {layer}: top {k} activations of {m} feature maps over {source}\n"
                 f"left: deconvnet projections; right: input patches ({min(field.size, size)}px receptive field)",
                 fontsize=9)
    for i in range(m):
        crops, patches = [], []
        inputs = display_images(run, run.inputs(images[top.images[i]]))
        for j in range(k):
            (y0, y1), (x0, x1) = field.window(top.rows[i, j], size), field.window(top.cols[i, j], size)
            crops.append(display_projection(projections[i, j, y0:y1, x0:x1]))
            patches.append(inputs[j, y0:y1, x0:x1])
        left = tile(crops, side)
        cell = np.concatenate([left, np.ones((left.shape[0], 2, 3)), tile(patches, side)], axis=1)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(cell, interpolation="nearest")
        ax.set_title(f"map {top.maps[i]} (max {top.values[i, 0]:.2f})" if top.values[i, 0] > 0
                     else f"map {top.maps[i]}: never active", fontsize=8)
        ax.set_axis_off()
    return save_figure(fig, path)


def draw_deconv(run_dir: str | Path, layers, maps: int = 16, top: int = 9, dataset: str | None = None,
                data_path: str | None = None, max_images: int | None = None, seed: int = 0,
                batch_size: int = 128, out: str | Path | None = None, tensorboard: bool = False) -> dict[str, Path]:
    """One Fig. 2 per layer, <out>/deconv_<layer>.png: a seeded random subset of `maps` feature
    maps, the `top` strongest activations of each over the dataset's images."""
    for layer in layers:
        check_conv_layer(layer)
    check_positive(maps=maps, top=top, batch_size=batch_size)
    if max_images is not None:
        check_positive(max_images=max_images)
    if data_path is not None and dataset is None:
        raise UserError(f"data path {data_path!r} needs a dataset to read it as; allowed: --data-path with --dataset")
    run = load_run(run_dir, float32=True)
    run.require_registry("visualize deconv")
    images, source = run.test_images(dataset, data_path, max_images, seed)
    if len(images) == 0:
        raise UserError(f"dataset {dataset or run.config.dataset.name!r} has no test images to search")
    written = {}
    for layer in layers:
        n_maps = run.model.get_layer(layer).conv.filters
        chosen = np.sort(np.random.default_rng(seed).choice(n_maps, min(maps, n_maps), replace=False))
        found = top_activations(run.model, run.batches(images, batch_size, f"{layer} search"), layer, chosen, top)
        projections, field = project_top(run, images, found, layer, batch_size)
        written[f"deconv_{layer}"] = deconv_figure(run, images, found, projections, field, layer, source,
                                                   output_dir(run, out) / f"deconv_{layer}.png")
    return publish(run, written, tensorboard)
