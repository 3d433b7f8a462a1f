"""The tf.data input pipeline: resize, seeded random crop and flip, per-channel standardization.

Every random choice is drawn per (run seed, epoch, image), so the same seed gives the same data
order and augmentation in every run and after a resume, and the parallel map stays deterministic.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of the training images, in 0..255 pixel units.

    Mean subtraction as in the paper; the division by the standard deviation scales pixels to
    about unit range, without which the paper's SGD recipe diverges under Keras's initializers.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Caffe-style models (Keras Applications' "caffe" mode: VGG, ResNet50) take BGR channels; the
    # mean and std are then in BGR order, the order the network sees.
    bgr: bool = False

    @classmethod
    def of(cls, images: np.ndarray, max_images: int = 10000) -> "Normalization":
        # Evenly spaced, not the first k: image arrays are often sorted by class.
        step = max(1, len(images) // max_images)
        sample = images[::step].astype(np.float64)
        return cls(tuple(sample.mean(axis=(0, 1, 2)).tolist()), tuple(sample.std(axis=(0, 1, 2)).tolist()))

    @classmethod
    def named(cls, mode: str, images: np.ndarray) -> "Normalization":
        """The input preprocessing `mode` as a Normalization: tfxfer's own standardization of
        `images` ("standardize"), one of Keras Applications' `preprocess_input` modes ("caffe",
        "tf", "torch"), or none ("raw": 0..255 pixels, for models that rescale inside)."""
        if mode == "standardize":
            return cls.of(images)
        if mode == "caffe":  # keras.applications.imagenet_utils: BGR, ImageNet mean subtracted
            return cls((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), bgr=True)
        if mode == "tf":  # x / 127.5 - 1
            return cls((127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
        if mode == "torch":  # x / 255, then ImageNet mean and std
            return cls(tuple(255 * m for m in (0.485, 0.456, 0.406)), tuple(255 * s for s in (0.229, 0.224, 0.225)))
        if mode == "raw":
            return cls((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        raise ValueError(f"preprocessing mode {mode!r} unknown")

    def __post_init__(self):
        # Read back from JSON as lists; tuples keep the dataclass hashable and comparable.
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))


def crops(images, tops, lefts, flips, *, input_size: int, resize_size: int, norm: Normalization, pad: int = 0):
    """uint8 images [B, H, W, 3] → float32 [B, input_size, input_size, 3]: each resized to
    resize_size, zero padded by `pad`, cropped at (tops[i], lefts[i]) of that, mirrored where
    flips[i], and standardized per channel. Every crop tfxfer makes (training, evaluation,
    serving, the prefix cache's views) is made here, so they agree exactly."""
    x = images
    if x.shape[1] != resize_size or x.shape[2] != resize_size:
        x = tf.image.resize(tf.cast(x, tf.float32), (resize_size, resize_size))
    if pad:
        # Black before standardization, as Caffe's padding is.
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    # Two gathers make every image's crop and flip at once, still in uint8 where the data is.
    span = tf.range(input_size)
    x = tf.gather(x, tf.cast(tops, tf.int32)[:, None] + span, axis=1, batch_dims=1)
    cols = tf.where(tf.cast(flips, tf.bool)[:, None], input_size - 1 - span, span)
    x = tf.gather(x, tf.cast(lefts, tf.int32)[:, None] + cols, axis=2, batch_dims=1)
    if norm.bgr:
        x = tf.reverse(x, axis=[-1])
    scale = 1.0 / np.asarray(norm.std, np.float32)
    return tf.cast(x, tf.float32) * scale - np.asarray(norm.mean, np.float32) * scale


def centre_crops(images, *, input_size: int, resize_size: int, norm: Normalization):
    """A batch as evaluation and serving see it: resized, centre crop, standardized."""
    b = tf.shape(images)[0]
    c = tf.fill([b], (resize_size - input_size) // 2)
    return crops(images, c, c, tf.zeros([b], tf.bool), input_size=input_size, resize_size=resize_size, norm=norm)


def preprocess(image, *, input_size: int, resize_size: int, norm: Normalization):
    """One uint8 image [H, W, 3] → float32 [input_size, input_size, 3], as in evaluation and serving."""
    return centre_crops(image[None], input_size=input_size, resize_size=resize_size, norm=norm)[0]


@dataclasses.dataclass(frozen=True)
class Views:
    """A fixed set of views of every image: crops at `offsets` (top, left) of the resized image
    zero-padded by `pad`, each also mirrored when `flip`. What a frozen prefix makes of them can be
    computed once and cached (prefix_cache), then one view per image is drawn each epoch."""

    pad: int
    offsets: tuple[tuple[int, int], ...]
    flip: bool

    def __len__(self) -> int:
        return len(self.offsets) * (2 if self.flip else 1)


def fixed_views(*, input_size: int, resize_size: int, pad: int = 0, crop: bool = False,
                flip: bool = False) -> Views:
    """The views standing in for random crops and flips: Zeiler & Fergus's 10 (the four corners
    and the centre of the padded image, with and without a horizontal flip). Without `crop`, the
    centre crop that evaluation sees (so `fixed_views(input_size=..., resize_size=...)` is it)."""
    if not crop:
        c = (resize_size - input_size) // 2
        return Views(0, ((c, c),), flip)
    m = resize_size + 2 * pad - input_size
    # dict.fromkeys: ordered and without repeats (with no room to move, every corner is the centre).
    offsets = tuple(dict.fromkeys([(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]))
    return Views(pad, offsets, flip)


def preprocess_views(images, views: Views, *, input_size: int, resize_size: int, norm: Normalization):
    """A batch of uint8 images [B, H, W, 3] → float32 [B, len(views), input_size, input_size, 3],
    each view the very crop training would make at that offset and flip."""
    b = tf.shape(images)[0]
    out = [crops(images, tf.fill([b], top), tf.fill([b], left), tf.fill([b], flip), input_size=input_size,
                 resize_size=resize_size, norm=norm, pad=views.pad)
           for flip in ((False, True) if views.flip else (False,)) for top, left in views.offsets]
    return tf.stack(out, axis=1)


def make_dataset(x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor, *, input_size: int, resize_size: int, norm: Normalization,
                 batch_size: int, training: bool, seed: int = 0, epoch: int = 0, pad: int = 0,
                 crop: bool = False, flip: bool = False, shard: tuple[int, int] = (1, 0),
                 steps: int | None = None) -> tf.data.Dataset:
    """Batches of (image, label). Training: shuffled by (seed, epoch), augmented, repeated, full batches
    (`steps` of them when given: the epoch's, so nothing is prefetched past its end).

    Images are batched first and cropped a batch at a time (no per-image function calls). Each
    image's crop offset and flip are drawn per (seed, epoch, image) before shuffling, so they do not
    depend on the batch size or the number of replicas."""
    size = {"input_size": input_size, "resize_size": resize_size, "norm": norm}
    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        return ds.map(lambda images, labels: (centre_crops(images, **size), labels),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(x))
    room = resize_size + 2 * pad - input_size if crop else 0
    centre = (resize_size - input_size) // 2
    tops, lefts = rng.integers(0, room + 1, size=(2, len(x))) if crop else np.full((2, len(x)), centre)
    flips = rng.random(len(x)) < 0.5 if flip else np.zeros(len(x), bool)
    rows = _batch_rows(order[shard[1]::shard[0]], batch_size)
    ds = tf.data.Dataset.from_tensor_slices(tuple(_batched(a, batch_size) for a in (rows, tops[rows], lefts[rows],
                                                                                     flips[rows])))
    # The images stay one tensor that each batch gathers its rows from: slicing a per-epoch copy of
    # them into the dataset cost about 10 s an epoch on CIFAR-10 (a third of cifar8-bn's epoch).
    # Callers that make an epoch at a time pass the images as a tensor, converted once.
    images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)

    def augment(batch, top, left, mirror):
        return crops(tf.gather(images, batch), top, left, mirror, **size, pad=pad if crop else 0), \
            tf.gather(labels, batch)

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _epoch(ds, steps)


def _epoch(ds: tf.data.Dataset, steps: int | None) -> tf.data.Dataset:
    # repeat() so every replica can always draw a full batch; take(steps): the epoch's batches.
    ds = ds.repeat()
    ds = (ds.take(steps) if steps else ds).prefetch(tf.data.AUTOTUNE)
    # Without tf.data's autotuner: with it, deleting an epoch's iterator (at the next epoch's start)
    # took 1-6 s under training load on 2 cores, up to 40 s of a 26-epoch run's ~30 s epochs; the
    # pipeline runs 30x faster than the model, so fixed parallelism (one call per core) costs nothing.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _batch_rows(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The rows that fill whole batches: the first k * batch_size (wrapping round when there are
    fewer than one batch); the rest of an epoch is dropped, as batch(drop_remainder=True) does."""
    k = max(1, len(rows) // batch_size)
    return rows[np.arange(k * batch_size) % len(rows)]


def _batched(a: np.ndarray, batch_size: int) -> np.ndarray:
    # Whole batches as one array [k, batch_size, ...]: tf.data then slices batches, never single
    # images, so nothing runs per image.
    return a.reshape(-1, batch_size, *a.shape[1:])


def make_feature_dataset(features: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int = 0, epoch: int = 0,
                         shard: tuple[int, int] = (1, 0), steps: int | None = None) -> tf.data.Dataset:
    """One training epoch over cached features [N, V, ...] (V views per image): batches of
    (features, label), one view per image drawn by (seed, epoch, image), in an order shuffled by
    (seed, epoch); repeated, full batches, as `make_dataset(training=True)` gives.

    The epoch's rows are gathered here in one vectorized read (of a memory map, for large caches),
    so no Python runs per batch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(y))
    view = rng.integers(features.shape[1], size=len(y))  # image i's view this epoch
    rows = _batch_rows(order[shard[1]::shard[0]], batch_size)
    ds = tf.data.Dataset.from_tensor_slices((_batched(features[rows, view[rows]], batch_size),
                                             _batched(y[rows], batch_size)))
    return _epoch(ds, steps)
