"""The tf.data input pipeline: resize, seeded random crop and flip, per-channel standardization.

Every random choice is a stateless op seeded by (run seed, epoch, element index), so the same seed
gives the same data order and augmentation in every run, on any number of replicas and after a
resume, and the parallel map stays deterministic.
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

    @classmethod
    def of(cls, images: np.ndarray, max_images: int = 10000) -> "Normalization":
        # Evenly spaced, not the first k: image arrays are often sorted by class.
        step = max(1, len(images) // max_images)
        sample = images[::step].astype(np.float64)
        return cls(tuple(sample.mean(axis=(0, 1, 2)).tolist()), tuple(sample.std(axis=(0, 1, 2)).tolist()))

    def __post_init__(self):
        # Read back from JSON as lists; tuples keep the dataclass hashable and comparable.
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))


def preprocess(image, *, input_size: int, resize_size: int, norm: Normalization, training: bool = False,
               pad: int = 0, crop: bool = False, flip: bool = False, seed=None):
    """One uint8 image [H, W, 3] → float32 [input_size, input_size, 3], as in training and serving."""
    x = tf.cast(image, tf.float32)
    if x.shape[0] != resize_size or x.shape[1] != resize_size:
        x = tf.image.resize(x, (resize_size, resize_size))
    if training and crop:
        if pad:
            x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], constant_values=0.0)
        x = tf.image.stateless_random_crop(x, (input_size, input_size, 3), seed=seed)
    elif resize_size != input_size:
        offset = (resize_size - input_size) // 2
        x = x[offset:offset + input_size, offset:offset + input_size]
    if training and flip:
        x = tf.image.stateless_random_flip_left_right(x, seed=seed[::-1])
    # Zero padding added above is black before normalization, as Caffe's padding is.
    return (x - tf.constant(norm.mean, tf.float32)) / tf.constant(norm.std, tf.float32)


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
    each view made exactly as `preprocess` makes a training crop (resize, pad, crop, flip, standardize)."""
    x = tf.cast(images, tf.float32)
    if x.shape[1] != resize_size or x.shape[2] != resize_size:
        x = tf.image.resize(x, (resize_size, resize_size))
    if views.pad:
        x = tf.pad(x, [[0, 0], [views.pad, views.pad], [views.pad, views.pad], [0, 0]], constant_values=0.0)
    crops = [x[:, top:top + input_size, left:left + input_size] for top, left in views.offsets]
    if views.flip:
        crops += [tf.reverse(c, axis=[2]) for c in crops]
    x = tf.stack(crops, axis=1)
    return (x - tf.constant(norm.mean, tf.float32)) / tf.constant(norm.std, tf.float32)


def make_dataset(x: np.ndarray, y: np.ndarray, *, input_size: int, resize_size: int, norm: Normalization,
                 batch_size: int, training: bool, seed: int = 0, epoch: int = 0, pad: int = 0,
                 crop: bool = False, flip: bool = False, shard: tuple[int, int] = (1, 0)) -> tf.data.Dataset:
    """Batches of (image, label). Training: shuffled by (seed, epoch), augmented, repeated, full batches."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shard[0] > 1:
        ds = ds.shard(*shard)
    if training:
        epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)
        ds = ds.shuffle(len(x), seed=epoch_seed, reshuffle_each_iteration=False).enumerate()

        def train_map(i, xy):
            img, label = xy
            s = tf.stack([tf.constant(epoch_seed, tf.int64), i])
            return preprocess(img, input_size=input_size, resize_size=resize_size, norm=norm, training=True,
                              pad=pad, crop=crop, flip=flip, seed=s), label

        # repeat() so every replica can always draw a full batch; the trainer counts steps per epoch.
        ds = ds.map(train_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).repeat()
    else:
        ds = ds.map(lambda img, label: (preprocess(img, input_size=input_size, resize_size=resize_size,
                                                   norm=norm), label),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def make_feature_dataset(features: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int = 0, epoch: int = 0,
                         shard: tuple[int, int] = (1, 0)) -> tf.data.Dataset:
    """One training epoch over cached features [N, V, ...] (V views per image): batches of
    (features, label), one view per image drawn by (seed, epoch, image), in an order shuffled by
    (seed, epoch); repeated, full batches, as `make_dataset(training=True)` gives.

    The epoch's rows are gathered here in one vectorized read (of a memory map, for large caches),
    so no Python runs per batch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(y))
    view = rng.integers(features.shape[1], size=len(y))  # image i's view this epoch
    rows = order[shard[1]::shard[0]]
    ds = tf.data.Dataset.from_tensor_slices((features[rows, view[rows]], y[rows]))
    return ds.repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
