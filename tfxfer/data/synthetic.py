"""`synthetic`: 24 procedurally drawn 32x32 classes built to show layer transferability quickly.

Every image is composed from a small pool of low-level primitives shared by all classes (soft
bars, rings, step edges, colour blobs, gratings, checkers, noise patches), so the features a
network's first layers need are the same for every class: they are *general*. What makes a class
is its fixed arrangement of 2-3 primitives (which kinds, where, at what angle, scale and colour),
so the upper layers that combine them are *specific*. The two families give a `dissimilar` split:
`shapes` are line/edge drawings (the "man-made" half), `textures` are blob/texture patches (the
"natural" half).

Templates are fixed constants, so `shapes_03` is the same pattern for every seed; the seed only
drives per-sample variation (shift, angle, scale, colour, phase, background, noise).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfxfer.data.types import ImageData
from tfxfer.errors import UserError

SIZE = 32
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

# A palette shared by both families; colours recur across classes so that colour alone never
# identifies a class and the network has to use the arrangement.
_RED = (0.9, 0.2, 0.2)
_GREEN = (0.2, 0.8, 0.3)
_BLUE = (0.25, 0.4, 0.95)
_YELLOW = (0.95, 0.85, 0.2)
_WHITE = (0.9, 0.9, 0.9)
_MAGENTA = (0.85, 0.3, 0.85)
_CYAN = (0.2, 0.85, 0.85)
_ORANGE = (0.95, 0.55, 0.15)


@dataclasses.dataclass(frozen=True)
class _Part:
    """One primitive of a class template.

    Kinds: `bar`, `ring`, `blob` (solid colour); `edge` (a disc split into a bright and a dark
    half), `grating`, `checker`, `noise` (textured discs). `size` is the half-length of a bar,
    else the radius; `detail` is the stroke width of a bar or ring, the period of a grating or
    checker, the cell size of noise, unused otherwise (pixels).
    """

    kind: str
    x: float
    y: float
    angle: float  # degrees
    size: float
    detail: float
    colour: tuple[float, float, float]


def _bar(x0: float, y0: float, x1: float, y1: float, colour, width: float = 3.0) -> _Part:
    """A bar given by its end points, which is how line drawings are easiest to write down."""
    angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
    half = math.hypot(x1 - x0, y1 - y0) / 2
    return _Part("bar", (x0 + x1) / 2, (y0 + y1) / 2, angle, half, width, colour)


def _patch(kind: str, x: float, y: float, size: float, detail: float, colour, angle: float = 0.0):
    return _Part(kind, x, y, angle, size, detail, colour)


_SHAPES: list[tuple[_Part, ...]] = [
    (_bar(6, 16, 26, 16, _WHITE), _bar(16, 6, 16, 26, _RED)),  # plus
    (_bar(8, 8, 24, 24, _WHITE), _bar(24, 8, 8, 24, _RED)),  # cross
    (_bar(6, 7, 26, 7, _RED), _bar(16, 9, 16, 27, _WHITE)),  # T
    (_bar(8, 5, 8, 25, _WHITE), _bar(8, 25, 26, 25, _RED)),  # L
    (_bar(10, 6, 10, 26, _BLUE), _bar(22, 6, 22, 26, _YELLOW)),  # two verticals
    (_bar(6, 10, 26, 10, _BLUE), _bar(6, 22, 26, 22, _YELLOW)),  # two horizontals
    (_patch("ring", 16, 16, 9, 3, _YELLOW), _bar(12, 16, 20, 16, _BLUE)),  # ring with dash
    (_patch("ring", 11, 11, 6, 2.5, _WHITE), _bar(18, 18, 27, 27, _BLUE)),  # ring and diagonal
    (_bar(16, 5, 6, 25, _GREEN), _bar(6, 25, 26, 25, _GREEN), _bar(26, 25, 16, 5, _GREEN)),
    (_patch("edge", 16, 16, 11, 0, _GREEN, angle=90), _bar(16, 6, 16, 26, _WHITE)),  # split disc
    (_bar(6, 6, 16, 26, _YELLOW), _bar(26, 6, 16, 26, _RED)),  # V
    (_bar(6, 7, 26, 7, _BLUE), _bar(26, 7, 6, 25, _WHITE), _bar(6, 25, 26, 25, _BLUE)),  # Z
]

_TEXTURES: list[tuple[_Part, ...]] = [
    (_patch("blob", 10, 10, 5, 0, _RED), _patch("grating", 21, 21, 9, 4, _WHITE)),
    (_patch("blob", 22, 22, 5, 0, _RED), _patch("grating", 11, 11, 9, 4, _WHITE, angle=90)),
    (_patch("checker", 16, 16, 11, 4, _YELLOW),),
    (_patch("checker", 16, 16, 11, 8, _CYAN), _patch("blob", 16, 16, 3, 0, _RED)),
    (_patch("noise", 16, 16, 11, 2, _GREEN),),
    (_patch("noise", 10, 16, 8, 4, _ORANGE), _patch("blob", 24, 16, 4, 0, _BLUE)),
    (_patch("grating", 16, 16, 11, 3, _MAGENTA, angle=45),),
    (_patch("grating", 16, 16, 11, 6, _MAGENTA, angle=135),),
    (_patch("blob", 9, 9, 4, 0, _GREEN), _patch("blob", 23, 23, 4, 0, _BLUE),
     _patch("blob", 23, 9, 4, 0, _YELLOW)),
    (_patch("noise", 16, 16, 11, 2, _WHITE), _patch("blob", 16, 16, 7, 0, _ORANGE)),
    (_patch("grating", 10, 22, 7, 4, _CYAN), _patch("checker", 22, 10, 7, 4, _CYAN)),
    (_patch("noise", 16, 16, 12, 4, _WHITE), _patch("grating", 16, 16, 6, 3, _GREEN, angle=90)),
]

FAMILIES: dict[str, list[tuple[_Part, ...]]] = {"shapes": _SHAPES, "textures": _TEXTURES}

# Per-sample variation, tuned so that a small CNN (3 conv layers, 3 epochs on CPU) reaches about
# 85 % test accuracy over the 24 classes and 85-90 % within a family: varied enough not to be
# memorised, regular enough to learn quickly.
_SHIFT = 4.0  # pixels the whole arrangement moves
_WOBBLE = 1.0  # pixels each part moves on top of that
_ANGLE = 20.0  # degrees each part turns
_SCALE = 0.15  # relative change in a part's size
_COLOUR = 0.25  # std of the RGB offset of a part's colour
_OPACITY = (0.4, 1.0)  # of a class's parts
_CLUTTER_OPACITY = (0.3, 0.7)  # of the one distractor primitive per image
_NOISE = 0.2  # half-width of the uniform per-pixel noise


def _render(part: _Part, rng: np.random.Generator, shift: np.ndarray, alpha: tuple[float, float]):
    """Draws jittered copies of one primitive, one per row of `shift` ([n, 2] pixel offsets).

    Returns the coverage mask [n,H,W] (already scaled by a random opacity in `alpha`) and the
    colour, [n,H,W,3] or [n,1,1,3] for a solid primitive.
    """
    n = len(shift)

    def jitter(lo, hi):
        return rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)

    # Per-part wobble on top of the caller's shift, so the network must learn the layout rather
    # than exact pixel positions.
    dx = _XX - (part.x + shift[:, 0, None, None] + jitter(-_WOBBLE, _WOBBLE))
    dy = _YY - (part.y + shift[:, 1, None, None] + jitter(-_WOBBLE, _WOBBLE))
    theta = np.deg2rad(part.angle + jitter(-_ANGLE, _ANGLE))
    size = part.size * jitter(1 - _SCALE, 1 + _SCALE)
    detail = part.detail * jitter(0.9, 1.1)
    u = dx * np.cos(theta) + dy * np.sin(theta)  # along the primitive's axis
    v = dy * np.cos(theta) - dx * np.sin(theta)  # across it
    r = np.sqrt(dx * dx + dy * dy)
    # Soft (1-pixel ramp) edges keep strokes antialiased at any sub-pixel offset.
    disc = np.clip(size - r + 0.5, 0, 1)
    shade = np.float32(1)  # solid primitives broadcast one colour over the mask
    if part.kind == "bar":
        mask = np.clip(size - np.abs(u) + 0.5, 0, 1) * np.clip(detail / 2 - np.abs(v) + 0.5, 0, 1)
    elif part.kind == "ring":
        mask = np.clip(detail / 2 - np.abs(r - size) + 0.5, 0, 1)
    elif part.kind == "blob":
        mask = np.exp(-0.5 * (r / (0.6 * size)) ** 2)
    elif part.kind == "edge":
        mask, shade = disc, np.clip(u + 0.5, 0, 1)
    elif part.kind == "grating":
        mask, shade = disc, 0.5 + 0.5 * np.sin(2 * np.pi * u / detail + jitter(0, 2 * np.pi))
    elif part.kind == "checker":
        wave = np.sin(2 * np.pi * u / detail + jitter(0, 2 * np.pi))
        wave = wave * np.sin(2 * np.pi * v / detail + jitter(0, 2 * np.pi))
        mask, shade = disc, np.clip(0.5 + 2 * wave, 0, 1)  # steep, so squares not blobs
    elif part.kind == "noise":
        # Blocky noise at the template's cell size: the scale belongs to the class, the values
        # are fresh per sample.
        cell = int(part.detail)
        cells = -(-SIZE // cell)
        coarse = rng.random((n, cells, cells), dtype=np.float32)
        mask, shade = disc, coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :SIZE, :SIZE]
    else:
        raise ValueError(f"unknown primitive {part.kind!r}")

    colour = np.asarray(part.colour, np.float32) + rng.normal(0, _COLOUR, (n, 1, 1, 3))
    # Texture troughs keep 15 % of the colour so a patch stays visible against the background.
    rgb = np.clip(colour, 0, 1).astype(np.float32) * (0.15 + 0.85 * shade)[..., None]
    return mask * rng.uniform(*alpha, (n, 1, 1)).astype(np.float32), rgb


def _draw_split(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` images of every class, shuffled, as uint8."""
    templates = [t for family in FAMILIES.values() for t in family]
    pool = [part for t in templates for part in t]
    y = np.repeat(np.arange(len(templates), dtype=np.int64), per_class)
    n = len(y)

    # Background: a dim random colour with a random linear gradient, so no class can be told
    # apart by its background.
    base = rng.uniform(0, 0.35, (n, 1, 1, 3)).astype(np.float32)
    slope = rng.normal(0, 0.006, (n, 2, 1, 1, 1)).astype(np.float32)
    img = base + slope[:, 0] * (_XX - 15.5)[..., None] + slope[:, 1] * (_YY - 15.5)[..., None]

    def paint(part, rows, shift, alpha):
        mask, rgb = _render(part, rng, shift, alpha)
        img[rows] += mask[..., None] * (rgb - img[rows])  # later paint occludes earlier paint

    # Clutter: a faint primitive from the shared pool, anywhere, under the class's own parts.
    # It makes the low-level features alone ambiguous, so the arrangement has to be learned.
    distractor = rng.integers(len(pool), size=n)
    for j, part in enumerate(pool):
        rows = np.flatnonzero(distractor == j)
        paint(part, rows, rng.uniform(-10, 10, (len(rows), 2)).astype(np.float32), _CLUTTER_OPACITY)

    # One shift per image moves the whole arrangement together, keeping its layout intact.
    shift = rng.uniform(-_SHIFT, _SHIFT, (n, 2)).astype(np.float32)
    for c, template in enumerate(templates):
        rows = slice(c * per_class, (c + 1) * per_class)
        for part in template:
            paint(part, rows, shift[rows], _OPACITY)

    # Uniform rather than Gaussian noise: as good a nuisance and several times cheaper to draw.
    img += (rng.random(img.shape, dtype=np.float32) - 0.5) * (2 * _NOISE)
    # Shuffled so that any slice (e.g. a validation carve-out) holds every class.
    order = rng.permutation(n)
    return (img[order] * 255 + 0.5).clip(0, 255).astype(np.uint8), y[order]


def load_synthetic(
    *, train_per_class: int = 300, test_per_class: int = 100, seed: int = 0
) -> ImageData:
    """The `synthetic` dataset: 24 classes (two families of 12) of 32x32x3 uint8 images."""
    for flag, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} {value!r} is invalid; allowed: a whole number of at least 1")
    # Independent child streams: train and test never share a sample, and the test set does not
    # change when the train size does.
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    train_x, train_y = _draw_split(train_per_class, np.random.default_rng(train_seq))
    test_x, test_y = _draw_split(test_per_class, np.random.default_rng(test_seq))
    families = {name: [f"{name}_{i:02d}" for i in range(len(t))] for name, t in FAMILIES.items()}
    return ImageData(
        name="synthetic",
        class_names=[c for names in families.values() for c in names],
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        families=families,
    )
