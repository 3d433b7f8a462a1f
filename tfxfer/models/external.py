"""Bring your own network: a Keras model file as the base, cut at named layers.

The base is a `.keras` file (functional or sequential model, nested sub-models allowed), or a
`.weights.h5` with the `keras.applications` architecture it belongs to. It stands where a base run
stands for the registry's networks: treatments copy it up to a cut and put a new head on top.

- Cut points: every layer whose output is a feature map [B, H, W, C] or a vector [B, D]. A layer
  inside a nested model is named `outer/inner`. `auto`: the stage outputs, i.e. the last layer at
  each spatial resolution (the input of each downsampling; for Keras Applications these are the
  block outputs such as ResNet50's conv2_block3_out), then the vectors of the hidden layers with
  weights (Dense layers, tfxfer's fc6/fc7 blocks).
- The truncated model at a cut is `keras.Model(inputs, <the cut layer's output>)` over the base's
  own layers, so it computes exactly the original's intermediate output.
- Cut n of `base_model.cuts` is the "n" of a run. Treatments (tfxfer.treatments.build_file_treatment):
  AnB (the copied layers frozen, batch norm in inference mode: the prefix is called with
  training=False), AnB+ (copied, fine-tuned, batch norm learning as every layer does) and random (the same layers re-initialized from the
  run's seed, frozen); and baseB, the reference every treatment is read against: the layers up to
  the deepest cut, re-initialized and trained from scratch on B (n = 0).
- The new head: feature maps global-average-pooled, then `base_model.head`'s hidden ReLU layers
  (with the recipe's dropout and weight decay) and a linear classifier; the recipe's weight decay
  applies to the head only (the copied layers keep whatever regularizers they were saved with),
  as does the recipe's precision (the copied layers compute in the dtype policy they were saved
  with; the logits are float32).

Not supported, each with one error naming it: subclassed models (no layer graph to cut), models
with several inputs, inputs that are not an image batch [B, H, W, 3], and Keras SavedModel
directories (Keras 3 loads those only as an opaque `keras.layers.TFSMLayer`, whose inner layers
cannot be cut: re-save the model as `.keras`).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from tfxfer.errors import UserError
from tfxfer.models.registry import LAYER_NAMES

if TYPE_CHECKING:
    import keras

# Functions here take the config's base_model section (tfxfer.config.BaseModelConfig, `bm`) as
# it is, without importing the config layer, which sits above the models'; the treatments over a
# model file are tfxfer.treatments.build_file_treatment.
TRUNK = "base"  # the nested model of a treatment's network that is the truncated base
CUT = "cut"  # the layer after it whose output is the cut's features (what exports and probes read)
MAX_HEAD = 8  # hidden layers a new head may have (base_model.head)
# Every layer name a model-file run's network can have; with a registry net's blocks, what
# `export --layers` accepts (each run then checks its own).
FEATURE_LAYERS = (CUT, *(f"head{i}" for i in range(1, MAX_HEAD + 1)), "logits")
EXPORTABLE_LAYERS = (*LAYER_NAMES, *FEATURE_LAYERS)


@dataclasses.dataclass(frozen=True)
class ExternalSpec:
    """What the data pipeline, exports and reports need of a model-file network (an ArchSpec's part)."""

    name: str
    input_size: int
    resize_size: int  # = input_size: images are resized to the input, and padded for random crops
    head: tuple[int, ...] = ()

    @property
    def layers(self) -> tuple[str, ...]:
        """The treatment network's named layers, in order: the cut's features, the head, the logits."""
        return (CUT, *(f"head{i}" for i in range(1, len(self.head) + 1)), "logits")


@dataclasses.dataclass(frozen=True)
class Cut:
    name: str  # the layer's name; outer/inner inside a nested model
    shape: tuple  # its output's, batch dimension first (None)


def spec_of(bm) -> ExternalSpec:
    """A (resolved) base_model section's input geometry, as the data pipeline and exports read it."""
    if bm.input_size is None:
        raise ValueError("resolve() the base_model section first")
    return ExternalSpec(model_name(bm), bm.input_size, bm.input_size, tuple(bm.head))


def model_name(bm) -> str:
    return f"{bm.application}:{Path(bm.path).name}" if bm.application else f"file:{Path(bm.path).name}"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_base_model(bm) -> keras.Model:
    """The model of `bm.path`, checked to be one tfxfer can cut (see the module's docstring)."""
    import keras

    path = Path(bm.path)
    if not path.exists():
        raise UserError(f"base model {path} does not exist")
    if path.is_dir():
        raise UserError(f"base model {path} is a directory (a SavedModel?): Keras 3 loads a SavedModel only as an "
                        "opaque TFSMLayer whose layers cannot be cut; save the model as .keras and give that")
    if bm.sha256 is not None and file_sha256(path) != bm.sha256:
        raise UserError(f"base model {path} has changed: its sha256 is not the recorded {bm.sha256}")
    if path.name.endswith(".weights.h5"):
        model = _application(bm, path)
    elif path.suffix == ".keras":
        # tfxfer's own layers (ConvBlock, DenseBlock, ...) registered, so its nets saved as .keras load.
        import tfxfer.models.blocks  # noqa: F401

        if bm.application is not None:
            raise UserError(f"base_model.application {bm.application!r} is for a .weights.h5 file; {path} "
                            "is a whole model")
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:  # a corrupt file or an unregistered custom class: all Keras can say
            raise UserError(f"base model {path} cannot be loaded: {_first_line(e)}") from None
    else:
        raise UserError(f"base model {path}: unknown kind of file; allowed: a .keras file, or a .weights.h5 with "
                        "base_model.application (a keras.applications architecture)")
    check_model(model, str(path), bm.input_size)
    if model.inputs[0].shape[1] is None:
        # A model of any input size, fixed at input_size: its maps get concrete shapes (for the
        # cuts' listing and the stages of `auto`); the same layers and weights.
        fixed = keras.models.clone_model(model, input_tensors=keras.Input((bm.input_size, bm.input_size, 3)))
        fixed.set_weights(model.get_weights())
        model = fixed
    return model


def applications() -> list[str]:
    import keras

    return sorted(n for n in dir(keras.applications) if n[0].isupper())


def _application(bm, path: Path) -> keras.Model:
    import keras

    if bm.application not in applications():
        raise UserError(f"base_model.application {bm.application!r} is unknown; a .weights.h5 needs one of "
                        f"keras.applications' architectures: {', '.join(applications())}")
    if bm.input_size is None:
        raise UserError(f"base model {path}: a .weights.h5 needs base_model.input_size (--input-size)")
    try:
        model = getattr(keras.applications, bm.application)(
            weights=None, input_shape=(bm.input_size, bm.input_size, 3), **bm.application_kwargs)
        model.load_weights(path)
    except Exception as e:  # wrong architecture, wrong kwargs, corrupt file
        raise UserError(f"base model {path} cannot be loaded as {bm.application}"
                        f"({', '.join(f'{k}={v!r}' for k, v in bm.application_kwargs.items())}): {_first_line(e)}") \
            from None
    return model


def _graph_kind(model) -> str | None:
    """'functional' or 'sequential' for models with a layer graph tfxfer can cut; None otherwise."""
    import keras
    from keras.src.models.functional import Functional  # Keras 3 exposes no public "has a graph" test

    if isinstance(model, keras.Sequential):
        return "sequential"
    return "functional" if isinstance(model, Functional) else None


def check_model(model, where: str, input_size: int | None = None) -> None:
    """A UserError naming what is not supported, unless `model` can be cut; see the module's docstring."""
    if _graph_kind(model) is None:
        raise UserError(f"base model {where} is a subclassed model ({type(model).__name__}), which has no layer graph "
                        "to cut; supported: functional and sequential models")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise UserError(f"base model {where} has no defined input (a sequential model built without an Input?); "
                        "supported: models with one image input")
    if len(inputs) != 1:
        raise UserError(f"base model {where} has {len(inputs)} inputs; supported: models with one image input")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise UserError(f"base model {where}'s input shape {shape} is not an image batch (batch, height, width, 3); "
                        "supported: models of RGB images")
    if shape[1] != shape[2] or (shape[1] is None and input_size is None):
        raise UserError(f"base model {where}'s input shape {shape} is not a known square size; give "
                        "base_model.input_size (--input-size) for a model of any size")
    if shape[1] is not None and input_size is not None and shape[1] != input_size:
        raise UserError(f"base model {where} takes {shape[1]}x{shape[2]} images; base_model.input_size "
                        f"{input_size} differs")


def _graph(model):
    """The Functional graph of a functional or sequential model (a Sequential keeps one inside)."""
    import keras

    return model._functional if isinstance(model, keras.Sequential) else model


def _nodes(model) -> dict[str, list]:
    """The calls of each layer in `model`'s own graph, by layer name. A loaded Sequential's layers
    hold other calls too (from building), and a nested model's own `output` is its inner graph's,
    not the tensor the outer graph got from it: the graph's nodes say which tensors are the model's."""
    out: dict[str, list] = {}
    for nodes in _graph(model)._nodes_by_depth.values():
        for node in nodes:
            out.setdefault(node.operation.name, []).append(node)
    return out


def _output(node):
    return node.output_tensors[0] if len(node.output_tensors) == 1 else None


def cut_points(model, prefix: str = "") -> list[Cut]:
    """Every layer whose output is a feature map or a vector, in the network's order; the layers of
    a nested single-input model too, as outer/inner (before the nested model's own output)."""
    import keras

    cuts = []
    nodes = _nodes(model)
    for layer in model.layers:
        # A layer called more than once (a shared layer) has no single output to cut at.
        if isinstance(layer, keras.layers.InputLayer) or len(nodes.get(layer.name, ())) != 1:
            continue
        if _graph_kind(layer) is not None and len(_graph(layer).inputs) == 1:
            cuts += cut_points(layer, f"{prefix}{layer.name}/")
        output = _output(nodes[layer.name][0])
        if output is not None and len(output.shape) in (2, 4):
            cuts.append(Cut(prefix + layer.name, tuple(output.shape)))
    return cuts


def auto_cuts(model) -> list[str]:
    """The stage outputs: the last layer at each spatial resolution, along the network's shrinking
    maps (a padding layer's larger map is not a stage), then the hidden weight layers' vectors."""
    points = cut_points(model)
    last: dict[int, str] = {}
    smallest = None
    for c in points:
        if len(c.shape) != 4 or None in c.shape[1:3]:
            continue
        area = c.shape[1] * c.shape[2]
        if smallest is None or area <= smallest:
            smallest = area
            last[area] = c.name
    names = [c.name for c in points if c.name in set(last.values())]
    final = model.layers[-1].name
    # Vectors of layers with weights (Dense, tfxfer's fc blocks), not pooling's or the classifier's.
    dense = [c.name for c in points if len(c.shape) == 2 and "/" not in c.name and c.name != final
             and model.get_layer(c.name).weights]
    return names + dense


def cut_output(model, name: str):
    """The symbolic output of the cut `name` (outer/inner for a nested model's layer) in `model`'s graph."""
    import keras

    outer, _, rest = name.partition("/")
    (node,) = _nodes(model)[outer]
    if not rest:
        return _output(node)
    # Inside a nested model: its layers up to the cut, called on what the outer graph feeds it.
    layer = model.get_layer(outer)
    inner = keras.Model(_graph(layer).inputs, cut_output(layer, rest))
    (fed,) = node.input_tensors
    return inner(fed)


def truncate(model, name: str) -> keras.Model:
    """The base's layers from its input to the cut `name`, sharing their weights: its output is
    exactly the original's intermediate output at that layer."""
    import keras

    return keras.Model(_graph(model).inputs[0], cut_output(model, name), name=TRUNK)


def check_cuts(model, names: list[str], where: str) -> None:
    valid = [c.name for c in cut_points(model)]
    for name in names:
        if name not in valid:
            near = difflib.get_close_matches(name, valid, n=5, cutoff=0.3) or valid[:5]
            raise UserError(f"cut {name!r} is not a layer of base model {where} with a feature-map or vector output; "
                            f"e.g. {', '.join(near)}; all: tfxfer list cuts --base-model {where}")


def resolve(bm):
    """The base_model section made concrete: the file's sha256, the input size and the cut names
    (`auto` expanded), each checked against the model. Every error is a UserError raised before
    anything is written."""
    model = load_base_model(bm)
    if bm.cuts is None or bm.cuts == "auto":
        cuts = auto_cuts(model)
    else:
        cuts = list(bm.cuts)
        check_cuts(model, cuts, bm.path)
    if not cuts:
        raise UserError(f"base model {bm.path} has no cut points (layers with feature-map or vector outputs)")
    size = bm.input_size or model.inputs[0].shape[1]
    return dataclasses.replace(bm, sha256=file_sha256(bm.path), input_size=size, cuts=cuts)


def cut_of(bm, n: int) -> str:
    """The layer cut n names; n = 0 (a base net) spans the network up to the deepest cut."""
    return bm.cuts[n - 1] if n else bm.cuts[-1]


def build_network(base: keras.Model, cut: str, num_classes: int, *, input_size: int, head=(), frozen: bool,
                  reinit_seed: int | None, seed: int, run_seed: int = 0, dropout: float = 0.0,
                  weight_decay: float = 0.0, precision: str = "float32", name: str | None = None) -> keras.Model:
    """`base` truncated at `cut` (its own layers: copied; re-initialized from `reinit_seed` when
    given), frozen or learning, under a new head: global average pooling for a feature map, the
    `head` hidden ReLU layers, a linear classifier; initialized from `seed`. A re-initialization
    leaves Keras's global generator seeded with `run_seed`, as the run set it."""
    import keras

    from tfxfer.models.blocks import DenseBlock
    from tfxfer.models.registry import layer_seed

    trunk = truncate(base, cut)
    if reinit_seed is not None:
        # The same layers, freshly initialized: clone_model draws each layer's initializer from
        # Keras's global generator, seeded here (then put back to the run's seed).
        keras.utils.set_random_seed(reinit_seed)
        trunk = keras.models.clone_model(trunk)
        keras.utils.set_random_seed(run_seed)
    trunk.trainable = not frozen
    inputs = keras.Input((input_size, input_size, 3), name="image")
    # Frozen: inference mode always, so batch norm keeps the copied statistics.
    x = trunk(inputs, training=False) if frozen else trunk(inputs)
    # A layer of the outer graph for the cut's output (a nested model's own `output` is not in it).
    x = keras.layers.Identity(name=CUT)(x)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    for i, units in enumerate(head, start=1):
        x = DenseBlock(units, dropout=dropout, seed=layer_seed(seed, f"head{i}"), weight_decay=weight_decay,
                       dtype=precision, name=f"head{i}")(x)
    logits = DenseBlock(num_classes, relu=False, seed=layer_seed(seed, "logits"), weight_decay=weight_decay,
                        dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
