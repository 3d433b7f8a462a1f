"""The architecture registry: one place that names every 8-weight-layer network.

Layers are always named conv1..conv5, fc6, fc7, fc8, so "layer n" means the same block in every
architecture. Register a new one with `@register_arch("name")` returning an `ArchSpec`.

Any registered architecture also comes in the Table 3 variants of Zeiler & Fergus (2014, §5.1),
`get_arch(name, variant=...)`: layers removed or resized. A variant lacks some of the eight
blocks (or has them at other widths), so "layer n" is not defined for it: variants are trained
from scratch only (baseA, baseB), never copied from or into.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import zlib
from typing import TYPE_CHECKING, Callable

from tfxfer.errors import UserError

if TYPE_CHECKING:
    import keras

LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    filters: int
    kernel: int
    stride: int = 1
    padding: str = "same"
    pre_pad: int = 0
    pool: tuple[int, int] | None = None  # (size, stride)
    pool_padding: str = "valid"
    lrn: bool = False
    batch_norm: bool = False  # batch norm between the conv and its ReLU


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    name: str
    input_size: int  # the network sees input_size × input_size × 3
    resize_size: int  # images are resized to this before the (random or central) crop
    convs: tuple[ConvSpec, ...]  # conv1..conv5
    fc_units: tuple[int, int]  # fc6, fc7
    variant: str | None = None  # a name in VARIANTS, or None: the architecture as registered
    removed: tuple[str, ...] = ()  # blocks the variant leaves out

    def __post_init__(self):
        if len(self.convs) != 5:
            raise ValueError(f"arch {self.name!r} needs 5 conv layers, has {len(self.convs)}")

    @property
    def layers(self) -> tuple[str, ...]:
        """The blocks this network has, in order (all of LAYER_NAMES unless a variant removed some)."""
        return tuple(n for n in LAYER_NAMES if n not in self.removed)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of Table 3: blocks removed, fc6/fc7 or conv3-conv5 widths multiplied, or conv1's
    kernel and stride changed (the 11x11/4 -> 7x7/2 step of their §4.1)."""

    description: str
    removed: tuple[str, ...] = ()
    fc_scale: float = 1.0  # fc6 and fc7
    conv3_5_scale: float = 1.0  # conv3, conv4 and conv5
    conv1: tuple[int, int] | None = None  # conv1's (kernel, stride); its padding stays the arch's

    def apply(self, spec: ArchSpec, name: str) -> ArchSpec:
        convs = tuple(dataclasses.replace(c, filters=_w(c.filters, self.conv3_5_scale)) if i >= 2 else c
                      for i, c in enumerate(spec.convs))
        if self.conv1 is not None:
            convs = (dataclasses.replace(convs[0], kernel=self.conv1[0], stride=self.conv1[1]), *convs[1:])
        return dataclasses.replace(spec, convs=convs, fc_units=tuple(_w(u, self.fc_scale) for u in spec.fc_units),
                                   variant=name, removed=self.removed)


VARIANTS = {
    "no-conv3-4": Variant("removed layers 3, 4", removed=("conv3", "conv4")),
    "no-fc7": Variant("removed layer 7", removed=("fc7",)),
    "no-fc6-7": Variant("removed layers 6, 7", removed=("fc6", "fc7")),
    "no-conv3-4-fc6-7": Variant("removed layers 3, 4, 6, 7", removed=("conv3", "conv4", "fc6", "fc7")),
    "fc6-7-half": Variant("layers 6, 7 at half width", fc_scale=0.5),
    "fc6-7-double": Variant("layers 6, 7 at double width", fc_scale=2.0),
    "conv3-5-double": Variant("layers 3, 4, 5 at double width", conv3_5_scale=2.0),
    "conv1-7x7-s2": Variant("layer 1 as Zeiler & Fergus's: 7x7, stride 2", conv1=(7, 2)),
}


_ARCHS: dict[str, Callable[..., ArchSpec]] = {}


def register_arch(name: str):
    def wrap(fn):
        _ARCHS[name] = fn
        return fn

    return wrap


def list_archs(pattern: str = "*") -> list[str]:
    return sorted(n for n in _ARCHS if fnmatch.fnmatch(n, pattern))


def get_arch(name: str, width: float = 1.0, variant: str | None = None) -> ArchSpec:
    if name not in _ARCHS:
        raise UserError(f"arch {name!r} is unknown; allowed: {', '.join(list_archs())}")
    if not width > 0:
        raise UserError(f"arch width {width!r} must be > 0")
    spec = _ARCHS[name](width)
    return spec if variant is None else check_variant(variant).apply(spec, variant)


def check_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise UserError(f"arch variant {name!r} is unknown; allowed: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _w(n: int, width: float) -> int:
    return max(1, round(n * width))


@register_arch("caffenet")
def caffenet(width: float = 1.0) -> ArchSpec:
    """Caffe's reference net (AlexNet without grouped convs), the network of Yosinski et al."""
    c = lambda n: _w(n, width)  # noqa: E731
    return ArchSpec(
        "caffenet", 227, 256,
        (
            ConvSpec(c(96), 11, 4, "valid", pool=(3, 2), lrn=True),
            ConvSpec(c(256), 5, 1, "same", pool=(3, 2), lrn=True),
            ConvSpec(c(384), 3),
            ConvSpec(c(384), 3),
            ConvSpec(c(256), 3, pool=(3, 2)),
        ),
        (c(4096), c(4096)),
    )


@register_arch("zfnet")
def zfnet(width: float = 1.0) -> ArchSpec:
    """Zeiler & Fergus (2014) Fig. 3: 7×7/2 first layer; maps 110-55-26-13-13-13-6."""
    c = lambda n: _w(n, width)  # noqa: E731
    return ArchSpec(
        "zfnet", 224, 256,
        (
            ConvSpec(c(96), 7, 2, "valid", pre_pad=1, pool=(3, 2), pool_padding="same", lrn=True),
            ConvSpec(c(256), 5, 2, "valid", pool=(3, 2), pool_padding="same", lrn=True),
            ConvSpec(c(384), 3),
            ConvSpec(c(384), 3),
            ConvSpec(c(256), 3, pool=(3, 2)),
        ),
        (c(4096), c(4096)),
    )


@register_arch("cifar8")
def cifar8(width: float = 1.0) -> ArchSpec:
    """The same 5 conv + 3 fc shape for 32×32 images, small enough for 2 CPU cores."""
    c = lambda n: _w(n, width)  # noqa: E731
    return ArchSpec(
        "cifar8", 32, 32,
        (
            ConvSpec(c(32), 5, pool=(3, 2), pool_padding="same"),
            ConvSpec(c(64), 5, pool=(3, 2), pool_padding="same"),
            ConvSpec(c(96), 3),
            ConvSpec(c(96), 3),
            ConvSpec(c(64), 3, pool=(3, 2), pool_padding="same"),
        ),
        (c(256), c(256)),
    )


@register_arch("cifar8-bn")
def cifar8_bn(width: float = 1.0) -> ArchSpec:
    """cifar8 with batch norm between each conv and its ReLU, for fast convergence on 32×32 data.
    The BN is inside its conv block, so a copied block carries its statistics with it (and a frozen
    one keeps them: it runs in inference mode)."""
    spec = cifar8(width)
    return dataclasses.replace(spec, name="cifar8-bn",
                               convs=tuple(dataclasses.replace(c, batch_norm=True) for c in spec.convs))


def layer_seed(seed: int, layer: str) -> int:
    """A stable per-layer initializer seed, so each layer's init depends only on (seed, layer)."""
    return zlib.crc32(f"{seed}:{layer}".encode()) & 0x7FFFFFFF


def build_model(spec: ArchSpec, num_classes: int, *, seed: int = 0, dropout: float = 0.5,
                weight_decay: float = 0.0, renorm_radius: float | None = None,
                dtype_policy: str = "float32", name: str | None = None) -> keras.Model:
    """A functional model: input → conv1..conv5 → fc6, fc7 (ReLU, dropout) → fc8 logits (float32)."""
    # Keras (and TensorFlow under it) loads here, not at import, so that configs and flags are checked
    # and their errors printed before TensorFlow's start-up lines.
    import keras

    from tfxfer.models.blocks import ConvBlock, DenseBlock

    inputs = keras.Input((spec.input_size, spec.input_size, 3), name="image")
    x = inputs
    for i, conv in enumerate(spec.convs, start=1):
        layer = f"conv{i}"
        if layer in spec.removed:
            continue
        x = ConvBlock(**dataclasses.asdict(conv), seed=layer_seed(seed, layer), weight_decay=weight_decay,
                      renorm_radius=renorm_radius, dtype=dtype_policy, name=layer)(x)
    for layer, units in zip(("fc6", "fc7"), spec.fc_units):
        if layer in spec.removed:
            continue
        x = DenseBlock(units, dropout=dropout, seed=layer_seed(seed, layer), weight_decay=weight_decay,
                       dtype=dtype_policy, name=layer)(x)
    # Logits stay float32 under mixed precision so the softmax loss is computed stably.
    logits = DenseBlock(num_classes, relu=False, seed=layer_seed(seed, "fc8"), weight_decay=weight_decay,
                        dtype="float32", name="fc8")(x)
    return keras.Model(inputs, logits, name=name or spec.name)
