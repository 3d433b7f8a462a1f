"""A finished run's network cut at chosen layers, as a SavedModel with named TF Serving signatures.

Signatures (tag `serve`):
- `serving_default`: `images` (a batch of encoded JPEG/PNG/GIF/BMP bytes) → one output per layer;
  images are decoded, resized, cropped and standardized in the graph by the same functions the
  training and evaluation pipeline uses (`decode_image`, `centre_crops`).
- `features_from_pixels` / `features_from_pixels_uint8`: `pixels` [batch, H, W, 3] in 0..255
  pixel units, float32 or uint8 → the same outputs.
- `classify` (when the run recorded its class names): `images` → `probabilities` [batch, C] and
  the top k as `top_k_ids`, `top_k_names`, `top_k_scores`.

Conv layers are global-average-pooled ([batch, C]) or flattened ([batch, H*W*C]), chosen at export.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfxfer.data.pipeline import centre_crops, preprocess
from tfxfer.data.sources import decode_image
from tfxfer.errors import UserError, names_list
from tfxfer.models import LAYER_NAMES
from tfxfer.runs.finished import FinishedRun

CONV_REDUCTIONS = ("avg", "flatten")
FEATURE_SIGNATURES = ("serving_default", "features_from_pixels", "features_from_pixels_uint8")
CLASSIFY_SIGNATURE = "classify"


def parse_layers(layers: list[str], allowed: tuple[str, ...] = LAYER_NAMES) -> list[str]:
    """Layer names (e.g. ['fc7', 'conv5']) in network order, each once; each one of `allowed` (a
    run's `spec.layers`: a model file's runs have cut, head1.., logits)."""
    names = list(names_list(layers, "layers"))
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise UserError(f"layers {','.join(names) or '(none)'!r} invalid; allowed: one or more of "
                        f"{', '.join(allowed)}")
    return sorted(set(names), key=allowed.index)


def feature_model(finished: FinishedRun, layers: list[str], conv: str = "avg") -> keras.Model:
    """The run's network as a Keras model from preprocessed images to {layer: float32 [batch, D]}."""
    if conv not in CONV_REDUCTIONS:
        raise UserError(f"conv reduction {conv!r} unknown; allowed: {', '.join(CONV_REDUCTIONS)}")
    model = finished.model
    outputs = {}
    for name in layers:
        x = finished.output(name)
        if len(x.shape) == 4:
            x = keras.ops.mean(x, axis=(1, 2)) if conv == "avg" else keras.layers.Flatten()(x)
        # Mixed-precision runs compute in (b)float16; served features are float32 regardless.
        outputs[name] = keras.ops.cast(x, "float32")
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def build_archive(finished: FinishedRun, layers: list[str], conv: str = "avg",
                  top_k: int = 5) -> keras.export.ExportArchive:
    """An ExportArchive holding every signature above, ready for `write_out`."""
    spec, norm = finished.spec, finished.norm
    features = feature_model(finished, layers, conv)

    size = {"input_size": spec.input_size, "resize_size": spec.resize_size, "norm": norm}

    def to_inputs(batch, encoded: bool):
        # The evaluation pipeline's own crop: pixel batches at once; encoded images one at a time,
        # since each may decode to a different size.
        if not encoded:
            return centre_crops(batch, **size)
        return tf.map_fn(lambda data: preprocess(decode_image(data), **size), batch,
                         fn_output_signature=tf.TensorSpec((spec.input_size, spec.input_size, 3), tf.float32))

    archive = keras.export.ExportArchive()
    archive.track(features)
    images_spec = tf.TensorSpec([None], tf.string, name="images")

    # The first endpoint added is also TF Serving's serving_default; naming it so makes that explicit.
    @tf.function(input_signature=[images_spec])
    def serving_default(images):
        return features(to_inputs(images, encoded=True), training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def features_from_pixels(pixels):
        return features(to_inputs(pixels, encoded=False), training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")])
    def features_from_pixels_uint8(pixels):
        return features(to_inputs(pixels, encoded=False), training=False)

    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("features_from_pixels", features_from_pixels)
    archive.add_endpoint("features_from_pixels_uint8", features_from_pixels_uint8)

    class_names = finished.class_names
    if class_names:
        model = finished.model
        archive.track(model)
        k = min(top_k, len(class_names))
        names = tf.constant(class_names)

        @tf.function(input_signature=[images_spec])
        def classify(images):
            probs = tf.nn.softmax(tf.cast(model(to_inputs(images, encoded=True), training=False), tf.float32))
            top = tf.math.top_k(probs, k=k)
            return {"probabilities": probs, "top_k_ids": top.indices, "top_k_scores": top.values,
                    "top_k_names": tf.gather(names, top.indices)}

        archive.add_endpoint(CLASSIFY_SIGNATURE, classify)
    return archive
