"""Centered kernel alignment (Kornblith et al. 2019) with the unbiased HSIC estimator, in TensorFlow.

CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K = k(X, X), L = k(Y, Y) of the
same n examples. HSIC is estimated without bias (Song et al. 2012) through U-centering (Székely &
Rizzo 2014): with K~ the U-centred K, HSIC_1(K, L) = <K~, L~> / (n (n - 3)). Unlike the biased
estimator, it is about 0 for independent features whatever their dimension.

The minibatch form (Nguyen, Raghu & Kornblith 2021) averages HSIC_1 over minibatches before the
ratio, so thousands of images need only one minibatch's Gram matrices in memory; one minibatch of
all the examples is the full-batch estimate.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

KERNELS = ("linear", "rbf")


def gram(x, kernel: str = "linear", rbf_scale: float = 0.5) -> tf.Tensor:
    """The [n, n] Gram matrix (float64) of n examples, each flattened to a vector.

    rbf: exp(-d² / (2 σ²)) with σ = rbf_scale × the median distance between the examples
    (Kornblith et al.'s bandwidth, 0.5 of the median in their CIFAR experiments).
    """
    x = tf.cast(tf.reshape(x, (tf.shape(x)[0], -1)), tf.float64)
    dots = tf.matmul(x, x, transpose_b=True)
    if kernel == "linear":
        return dots
    if kernel != "rbf":
        raise ValueError(f"kernel {kernel!r} unknown; allowed: {', '.join(KERNELS)}")
    norms = tf.linalg.diag_part(dots)
    sq = tf.maximum(norms[:, None] + norms[None, :] - 2.0 * dots, 0.0)
    flat = tf.sort(tf.reshape(sq, [-1]))
    sq_median = flat[tf.size(flat) // 2]
    return tf.exp(-sq / (2.0 * rbf_scale ** 2 * sq_median))


def u_center(k: tf.Tensor) -> tf.Tensor:
    """U-centred Gram matrix: <u_center(K), u_center(L)> / (n (n - 3)) is the unbiased HSIC."""
    n = tf.cast(tf.shape(k)[0], k.dtype)
    k = tf.linalg.set_diag(k, tf.zeros_like(tf.linalg.diag_part(k)))
    means = tf.reduce_sum(k, 0) / (n - 2.0)
    means -= tf.reduce_sum(means) / (2.0 * (n - 1.0))
    k = k - means[:, None] - means[None, :]
    return tf.linalg.set_diag(k, tf.zeros_like(tf.linalg.diag_part(k)))


def hsic_unbiased(k: tf.Tensor, l: tf.Tensor) -> tf.Tensor:
    n = tf.cast(tf.shape(k)[0], tf.float64)
    return tf.reduce_sum(u_center(k) * u_center(l)) / (n * (n - 3.0))


class MinibatchCKA:
    """CKA between every layer of one network (xs) and every layer of another (ys), minibatch by minibatch.

    `update` takes one minibatch's activations (the same examples on both sides, at least 4);
    `result()` is the [len(xs), len(ys)] CKA matrix over all minibatches so far.
    """

    def __init__(self, kernel: str = "linear", rbf_scale: float = 0.5):
        if kernel not in KERNELS:
            raise ValueError(f"kernel {kernel!r} unknown; allowed: {', '.join(KERNELS)}")
        self.kernel, self.rbf_scale = kernel, rbf_scale
        self.xy = self.xx = self.yy = None

    def _centred(self, activations) -> tf.Tensor:
        """[layers, n²]: each layer's U-centred Gram, scaled so that dot products are HSIC_1."""
        n = int(activations[0].shape[0])
        if n < 4:
            raise ValueError(f"a minibatch needs at least 4 examples for the unbiased HSIC; got {n}")
        scale = 1.0 / np.sqrt(n * (n - 3.0))
        return tf.stack([tf.reshape(u_center(gram(a, self.kernel, self.rbf_scale)), [-1]) * scale
                         for a in activations])

    def update(self, xs, ys) -> None:
        gx, gy = self._centred(xs), self._centred(ys)
        xy = tf.matmul(gx, gy, transpose_b=True).numpy()
        xx, yy = tf.reduce_sum(gx * gx, 1).numpy(), tf.reduce_sum(gy * gy, 1).numpy()
        if self.xy is None:
            self.xy, self.xx, self.yy = xy, xx, yy
        else:
            self.xy, self.xx, self.yy = self.xy + xy, self.xx + xx, self.yy + yy

    def result(self) -> np.ndarray:
        if self.xy is None:
            raise ValueError("no minibatch seen yet")
        # Summed, not averaged, HSICs: the count cancels in the ratio.
        return self.xy / np.sqrt(np.outer(self.xx, self.yy))


def cka(x, y, kernel: str = "linear", rbf_scale: float = 0.5) -> float:
    """Full-batch CKA between two representations [n, ...] of the same n examples."""
    acc = MinibatchCKA(kernel, rbf_scale)
    acc.update([x], [y])
    return float(acc.result()[0, 0])
