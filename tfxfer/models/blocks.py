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


@keras.saving.register_keras_serializable(package="tfxfer")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras's BatchNormalization (same weights, config and semantics: inference mode whenever the
    layer is frozen) computed by TensorFlow's fused kernel on NHWC maps. Keras casts a whole
    bfloat16 map to float32 to take its moments, which halved the training speed of a cifar8 with
    batch norm on the 2-core CPU (about 1000 vs 2000 img/s); the fused kernel reads bfloat16 and
    keeps its statistics in float32."""

    def call(self, inputs, training=None, mask=None):
        import tensorflow as tf

        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or mask is not None or self.renorm \
                or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        x = tf.cast(inputs, self.compute_dtype)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                                 is_training=True)[:3]
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
            return y
        return tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean=self.moving_mean, variance=self.moving_variance,
                                                epsilon=self.epsilon, is_training=False)[0]


def _initializer(kind: str, seed: int):
    return keras.initializers.HeNormal(seed=seed) if kind == "he" else keras.initializers.GlorotUniform(seed=seed)


@keras.saving.register_keras_serializable(package="tfxfer")
class ConvBlock(keras.layers.Layer):
    """conv → [batch norm] → ReLU → [max-pool] → [LRN], as one named layer (conv1..conv5).

    Frozen (`trainable = False`), the batch norm runs in inference mode: its statistics stay the
    copied ones, as Keras does for a frozen BatchNormalization."""

    def __init__(self, filters, kernel, stride=1, padding="same", pre_pad=0, pool=None,
                 pool_padding="valid", lrn=False, batch_norm=False, seed=0, weight_decay=0.0, renorm_radius=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.cfg = dict(filters=filters, kernel=kernel, stride=stride, padding=padding, pre_pad=pre_pad,
                        pool=pool, pool_padding=pool_padding, lrn=lrn, batch_norm=batch_norm, seed=seed,
                        weight_decay=weight_decay, renorm_radius=renorm_radius)
        # Caffe's weight decay adds wd*w to the gradient; Keras's L2(l) adds 2*l*w.
        reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        self.pad = keras.layers.ZeroPadding2D(pre_pad, dtype=self.dtype_policy) if pre_pad else None
        # With batch norm the ReLU comes after it, and its offset stands in for the conv's bias.
        self.conv = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, activation=None if batch_norm else "relu",
            use_bias=not batch_norm, kernel_initializer=_initializer("he", seed), bias_initializer="zeros",
            kernel_regularizer=reg, kernel_constraint=FilterRenorm(renorm_radius) if renorm_radius else None,
            dtype=self.dtype_policy, name="conv",
        )
        self.bn = FusedBatchNorm(dtype=self.dtype_policy, name="bn") if batch_norm else None
        self.relu = keras.layers.ReLU(dtype=self.dtype_policy, name="relu") if batch_norm else None
        self.pool = (keras.layers.MaxPooling2D(pool[0], pool[1], padding=pool_padding, dtype=self.dtype_policy)
                     if pool else None)
        self.norm = LocalResponseNorm(dtype=self.dtype_policy) if lrn else None

    def build(self, input_shape):
        shape = input_shape
        for layer in self.sublayers():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def sublayers(self):
        return [layer for layer in (self.pad, self.conv, self.bn, self.relu, self.pool, self.norm) if layer is not None]

    def call(self, x, training=None):
        for layer in self.sublayers():
            x = layer(x, training=training) if layer is self.bn else layer(x)
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
