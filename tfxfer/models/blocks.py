"""One Keras layer per weight layer of the network: the weight layer with its activation,
pooling and normalization. "Copy the first n layers" then means "copy the first n blocks"."""
from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfxfer")
class FilterRenorm(keras.constraints.Constraint):
    """Zeiler & Fergus (2014, §3): conv filters whose RMS exceeds `radius` are rescaled to it."""

    def __init__(self, radius: float = 0.1):
        self.radius = float(radius)

    def __call__(self, w):
        # One RMS per output filter: reduce over kernel height, width and input channels.
        rms = ops.sqrt(ops.mean(ops.square(w), axis=(0, 1, 2), keepdims=True))
        return w * ops.minimum(1.0, self.radius / ops.maximum(rms, 1e-12))

    def get_config(self):
        return {"radius": self.radius}


@keras.saving.register_keras_serializable(package="tfxfer")
class LocalResponseNorm(keras.layers.Layer):
    """Caffe's across-channel LRN (AlexNet/CaffeNet): x / (k + alpha/size * sum x^2)^beta."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, x):
        import tensorflow as tf

        # tf's alpha multiplies the raw sum; Caffe's is averaged over the window.
        return tf.nn.local_response_normalization(
            x, depth_radius=self.size // 2, bias=self.k, alpha=self.alpha / self.size, beta=self.beta
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


def _initializer(kind: str, seed: int):
    return keras.initializers.HeNormal(seed=seed) if kind == "he" else keras.initializers.GlorotUniform(seed=seed)


@keras.saving.register_keras_serializable(package="tfxfer")
class ConvBlock(keras.layers.Layer):
    """conv → ReLU → [max-pool] → [LRN], as one named layer (conv1..conv5)."""

    def __init__(self, filters, kernel, stride=1, padding="same", pre_pad=0, pool=None,
                 pool_padding="valid", lrn=False, seed=0, weight_decay=0.0, renorm_radius=None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = dict(filters=filters, kernel=kernel, stride=stride, padding=padding, pre_pad=pre_pad,
                        pool=pool, pool_padding=pool_padding, lrn=lrn, seed=seed,
                        weight_decay=weight_decay, renorm_radius=renorm_radius)
        # Caffe's weight decay adds wd*w to the gradient; Keras's L2(l) adds 2*l*w.
        reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        self.pad = keras.layers.ZeroPadding2D(pre_pad, dtype=self.dtype_policy) if pre_pad else None
        self.conv = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, activation="relu",
            kernel_initializer=_initializer("he", seed), bias_initializer="zeros",
            kernel_regularizer=reg, kernel_constraint=FilterRenorm(renorm_radius) if renorm_radius else None,
            dtype=self.dtype_policy, name="conv",
        )
        self.pool = (keras.layers.MaxPooling2D(pool[0], pool[1], padding=pool_padding, dtype=self.dtype_policy)
                     if pool else None)
        self.norm = LocalResponseNorm(dtype=self.dtype_policy) if lrn else None

    def build(self, input_shape):
        shape = input_shape
        for layer in self.sublayers():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def sublayers(self):
        return [layer for layer in (self.pad, self.conv, self.pool, self.norm) if layer is not None]

    def call(self, x):
        for layer in self.sublayers():
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        for layer in self.sublayers():
            input_shape = layer.compute_output_shape(input_shape)
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.cfg}


@keras.saving.register_keras_serializable(package="tfxfer")
class DenseBlock(keras.layers.Layer):
    """[flatten] → dense → [ReLU → dropout], as one named layer (fc6, fc7, fc8)."""

    def __init__(self, units, relu=True, dropout=0.0, seed=0, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.cfg = dict(units=units, relu=relu, dropout=dropout, seed=seed, weight_decay=weight_decay)
        reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        self.dense = keras.layers.Dense(
            units, activation="relu" if relu else None,
            kernel_initializer=_initializer("he" if relu else "glorot", seed), kernel_regularizer=reg,
            dtype=self.dtype_policy, name="dense",
        )
        self.drop = keras.layers.Dropout(dropout, seed=seed) if dropout else None

    def build(self, input_shape):
        self.dense.build((input_shape[0], math.prod(input_shape[1:])))

    def call(self, x, training=None):
        if len(x.shape) > 2:
            x = ops.reshape(x, (-1, math.prod(x.shape[1:])))
        x = self.dense(x)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.cfg["units"])

    def get_config(self):
        return {**super().get_config(), **self.cfg}
