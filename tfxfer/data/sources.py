"""Readers behind `load_dataset`: class-folder trees, CIFAR-10/100 and TFDS, all into `ImageData`.

Every reader returns 3-channel uint8 images. When all images of a dataset share one size they
keep it; otherwise every image is resized (bilinear, antialiased, aspect ratio not kept) to
`image_size` x `image_size`, the architecture's input size. Nothing here touches the network
unless TFDS is asked to download CIFAR because no local copy was given.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable

import numpy as np

from tfxfer.data.splits import carve_validation
from tfxfer.data.types import ImageData
from tfxfer.errors import UserError

log = logging.getLogger(__name__)

# What tf.io.decode_image reads; other files in a class folder (README, .DS_Store) are skipped.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Part of every cache fingerprint: bump it when decoding changes, so old cached arrays are redone.
_DECODER_VERSION = 1


def default_cache_dir() -> str:
    return os.environ.get("TFXFER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tfxfer")


# --- one normalisation for every source --------------------------------------------------------


def _to_rgb(x: np.ndarray) -> np.ndarray:
    """Grayscale (1), grayscale+alpha (2), RGB (3) or RGBA (4) channels, last axis, to RGB."""
    channels = x.shape[-1]
    if channels in (1, 2):
        return np.repeat(x[..., :1], 3, axis=-1)
    if channels in (3, 4):
        return x[..., :3]
    raise UserError(f"images with {channels} channels are not supported; allowed: 1, 2, 3 or 4")


def _stack(images: list[np.ndarray], image_size: int) -> np.ndarray:
    """Stack as RGB uint8 at the common native size, or resized to image_size when sizes differ."""
    images = [_to_rgb(np.asarray(im)) for im in images]
    if len({im.shape for im in images}) == 1:
        return np.stack(images).astype(np.uint8, copy=False)
    import tensorflow as tf

    log.info("images differ in size; resizing %d images to %dx%d", len(images), image_size, image_size)
    resized = [tf.image.resize(im, (image_size, image_size), antialias=True).numpy() for im in images]
    return np.clip(np.round(np.stack(resized)), 0, 255).astype(np.uint8)


def _stack_parts(parts: list[list[np.ndarray]], image_size: int) -> list[np.ndarray]:
    """`_stack` over several parts (train, test) at once, so one keep-or-resize decision covers all."""
    x = _stack([im for part in parts for im in part], image_size)
    return np.split(x, np.cumsum([len(part) for part in parts])[:-1])


# --- class-folder trees -------------------------------------------------------------------------


def read_folder(
    path: str, *, name: str, image_size: int, cache_dir: str | None, test_fraction: float = 0.2, seed: int = 0
) -> ImageData:
    """`PATH/train/<class>/*` + `PATH/test/<class>/*`, or `PATH/<class>/*` with a held-out test set.

    Classes are the sorted folder names. Decoded arrays are cached (see `_cached`), so only the
    first read of a folder pays for decoding; the held-out carve happens after the cache, so
    changing `test_fraction` or `seed` costs no decoding.
    """
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise UserError(f"image folder {path!r} does not exist or is not a directory")
    trees = {part: _class_files(d) for part, d in _folder_parts(root).items()}
    if "train" in trees:
        only_train = sorted(set(trees["train"]) - set(trees["test"]))
        only_test = sorted(set(trees["test"]) - set(trees["train"]))
        if only_train or only_test:
            raise UserError(
                f"image folder {path!r}: train/ and test/ must hold the same class folders; "
                f"only in train: {', '.join(only_train) or '-'}; only in test: {', '.join(only_test) or '-'}"
            )
    class_names = sorted(next(iter(trees.values())))
    # The cache fingerprint: any added, removed or rewritten image invalidates the cached arrays.
    listing = [
        [part, c, os.path.relpath(f, root), size, mtime]
        for part, tree in trees.items()
        for c in class_names
        for f, size, mtime in tree[c]
    ]
    arrays = _cached(
        # One cache file per folder and image size (the size matters when images are resized).
        os.path.join(cache_dir or default_cache_dir(), f"folder-{_sha(root)[:16]}-{image_size}.npz"),
        _sha(json.dumps([_DECODER_VERSION, listing])),
        lambda: _decode_trees(trees, class_names, image_size),
    )
    if "all_x" in arrays:
        train_x, train_y, test_x, test_y = carve_validation(arrays["all_x"], arrays["all_y"], test_fraction, seed)
    else:
        train_x, train_y, test_x, test_y = (arrays[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    return ImageData(name, class_names, train_x, train_y, test_x, test_y)


def _folder_parts(root: str) -> dict[str, str]:
    has = {part: os.path.isdir(os.path.join(root, part)) for part in ("train", "test")}
    if all(has.values()):
        return {part: os.path.join(root, part) for part in has}
    if any(has.values()):
        present, absent = ("train", "test") if has["train"] else ("test", "train")
        raise UserError(
            f"image folder {root!r} has {present}/ but no {absent}/; give both, or put the class folders directly in it"
        )
    return {"all": root}


def _class_files(tree: str) -> dict[str, list[tuple[str, int, int]]]:
    """class name -> [(path, size, mtime_ns)] of its image files, sorted by file name."""
    classes = sorted(e.name for e in os.scandir(tree) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"image folder {tree!r} has no class folders; expected {tree}/<class>/<image files>")
    files = {}
    for c in classes:
        entries = sorted(
            (e for e in os.scandir(os.path.join(tree, c)) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)),
            key=lambda e: e.name,
        )
        if not entries:
            raise UserError(
                f"class folder {os.path.join(tree, c)!r} has no images; allowed: {', '.join(IMAGE_EXTENSIONS)}"
            )
        files[c] = [(e.path, st.st_size, st.st_mtime_ns) for e in entries for st in (e.stat(),)]
    return files


def _decode_trees(trees: dict, class_names: list[str], image_size: int) -> dict[str, np.ndarray]:
    """{part}_x / {part}_y arrays for each part ("train" and "test", or "all")."""
    labelled = {
        part: [(f, y) for y, c in enumerate(class_names) for f, _, _ in tree[c]] for part, tree in trees.items()
    }
    paths = [f for pairs in labelled.values() for f, _ in pairs]
    log.info("decoding %d images (cached after this first read)", len(paths))
    images = iter(_decode_files(paths))
    xs = _stack_parts([[next(images) for _ in pairs] for pairs in labelled.values()], image_size)
    arrays = {}
    for (part, pairs), x in zip(labelled.items(), xs):
        arrays[f"{part}_x"], arrays[f"{part}_y"] = x, np.asarray([y for _, y in pairs], dtype=np.int64)
    return arrays


def decode_image(data):
    """Encoded image bytes (a string tensor) → uint8 [H, W, 3]; the one decoder for training and serving."""
    import tensorflow as tf

    # channels=3 turns grayscale, RGBA and palette images into RGB. JPEGs get the accurate
    # IDCT (the one PIL uses; the default is off by a few levels); GIFs give their first frame.
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )


def _decode_files(paths: list[str]) -> list[np.ndarray]:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: decode_image(tf.io.read_file(p)),
                                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images: list[np.ndarray] = []
    try:
        for image in ds.as_numpy_iterator():
            images.append(image)
    except tf.errors.OpError as e:
        # Deterministic order: the failing element is the one after the last image received.
        raise UserError(f"cannot read image {paths[len(images)]!r}: {_first_line(e.message)}") from None
    return images


# --- on-disk cache of decoded arrays ------------------------------------------------------------


def _cached(file: str, fingerprint: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from `file` if its stored fingerprint matches, else `compute()` and store them.

    A changed fingerprint overwrites the file, so stale entries do not pile up. The cache only
    ever speeds things up: unreadable or unwritable cache files fall back to `compute()`.
    """
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fingerprint:
                return {k: z[k] for k in z.files if k != "fingerprint"}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable cache file %s: %s", file, e)
    arrays = compute()
    tmp = None
    try:
        os.makedirs(os.path.dirname(file), exist_ok=True)
        # Write then rename, so a crash or a concurrent reader never sees a half-written file.
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(file), suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.savez(f, fingerprint=np.array(fingerprint), **arrays)
        os.replace(tmp, file)
    except OSError as e:
        log.warning("could not write cache file %s: %s", file, e)
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
    return arrays


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _first_line(error: object) -> str:
    """Keeps UserError messages to one line."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no details"


# --- CIFAR-10 / CIFAR-100 -----------------------------------------------------------------------

_CIFAR = {
    "cifar10": dict(
        env="TFXFER_CIFAR10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        meta="batches.meta",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
    ),
    "cifar100": dict(
        env="TFXFER_CIFAR100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        meta="meta",
        train=["train"],
        test=["test"],
    ),
}
CIFAR10_VEHICLES = ("airplane", "automobile", "ship", "truck")
CIFAR100_MAN_MADE = (
    "food_containers",
    "household_electrical_devices",
    "household_furniture",
    "large_man-made_outdoor_things",
    "vehicles_1",
    "vehicles_2",
)


def load_cifar(
    which: str, *, path: str | None, data_dir: str | None, image_size: int, cache_dir: str | None
) -> ImageData:
    """CIFAR from `path`, else `$TFXFER_CIFAR10`/`$TFXFER_CIFAR100`, else TFDS (may download).

    A local copy is a class-folder tree `{train,test}/<class>/*`, the official python-format
    archive (`cifar-10-python.tar.gz`), its extracted folder (`cifar-10-batches-py`), or a
    folder holding either of the last two. CIFAR-10 always gets the `vehicles`/`animals`
    families; CIFAR-100 gets `man_made`/`natural` and one family per superclass only from the
    python format, the one form that carries the coarse labels.
    """
    spec = _CIFAR[which]
    source, origin = (path, "path") if path else (os.environ.get(spec["env"]), f"${spec['env']}")
    if not source:
        try:
            data = read_tfds(which, data_dir=data_dir, image_size=image_size, download=True)
        except Exception as e:  # Whatever TFDS fails on (no network, no disk, no module), the fix is a local copy.
            raise UserError(
                f"{which}: no local copy given and TFDS could not provide it ({type(e).__name__}: {_first_line(e)}); "
                f"set path or ${spec['env']} to a class-folder tree {{train,test}}/<class>/* "
                f"or the official {spec['archive']}"
            ) from None
    else:
        data = _read_local_cifar(which, source, origin, image_size=image_size, cache_dir=cache_dir)
    data.name = which
    if which == "cifar10" and not data.families:
        vehicles = [c for c in data.class_names if c in CIFAR10_VEHICLES]
        animals = [c for c in data.class_names if c not in CIFAR10_VEHICLES]
        if vehicles and animals:
            data.families = {"vehicles": vehicles, "animals": animals}
    return data


def _read_local_cifar(which: str, source: str, origin: str, *, image_size: int, cache_dir: str | None) -> ImageData:
    """`origin` ("path" or the environment variable) tells the user where a bad location came from."""
    spec = _CIFAR[which]
    source = os.path.abspath(os.path.expanduser(source))
    if os.path.isfile(source):
        return _read_cifar_pickles(which, source)
    if not os.path.isdir(source):
        raise UserError(f"{which} copy {source!r} (from {origin}) does not exist")
    if all(os.path.isdir(os.path.join(source, p)) for p in ("train", "test")):
        return read_folder(source, name=which, image_size=image_size, cache_dir=cache_dir)
    # The extracted folder itself, the folder holding it, or the folder holding the archive.
    for candidate in (source, os.path.join(source, spec["folder"]), os.path.join(source, spec["archive"])):
        if os.path.isfile(os.path.join(candidate, spec["meta"])) or os.path.isfile(candidate):
            return _read_cifar_pickles(which, candidate)
    raise UserError(
        f"{which} copy {source!r} (from {origin}) is not recognised; allowed: a folder with "
        f"train/<class>/ and test/<class>/, the official {spec['archive']}, or its extracted {spec['folder']}/ folder"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts, lists, bytes, numpy arrays) and refuses anything else,
    so a tampered archive cannot run code."""

    _ALLOWED = {
        ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_pickles(which: str, source: str) -> ImageData:
    """The official python-format batches from a .tar.gz archive or an extracted folder."""
    spec = _CIFAR[which]
    wanted = [spec["meta"], *spec["train"], *spec["test"]]
    errors = (tarfile.TarError, pickle.UnpicklingError, EOFError, OSError, ValueError, zlib.error)
    batches: dict[str, dict] = {}
    if os.path.isfile(source):
        try:
            # Read members in stream order: seeking backwards in a .gz re-decompresses from the start.
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    base = os.path.basename(member.name)
                    if member.isfile() and base in wanted:
                        batches[base] = _ArrayUnpickler(tar.extractfile(member), encoding="bytes").load()
        except errors as e:
            raise UserError(f"{which} archive {source!r} is corrupt or truncated ({_first_line(e)})") from None
        missing = [w for w in wanted if w not in batches]
        if missing:
            raise UserError(
                f"{which} archive {source!r} lacks {', '.join(missing)}; expected the official {spec['archive']}"
            )
    else:
        for w in wanted:
            file = os.path.join(source, w)
            if not os.path.isfile(file):
                raise UserError(f"{which} file {file!r} is missing; expected the extracted official {spec['folder']}/")
            try:
                with open(file, "rb") as f:
                    batches[w] = _ArrayUnpickler(f, encoding="bytes").load()
            except errors as e:
                raise UserError(f"{which} file {file!r} is corrupt or truncated ({_first_line(e)})") from None

    def field(batch: str, key: bytes):
        try:
            return batches[batch][key]
        except (KeyError, TypeError):
            raise UserError(f"{which} batch {batch!r} in {source!r} has no {key.decode()!r} entry") from None

    def images_labels(names: list[str], label_key: bytes):
        xs, ys = [], []
        for n in names:
            x = np.asarray(field(n, b"data"), dtype=np.uint8).reshape(-1)
            y = np.asarray(field(n, label_key), dtype=np.int64).reshape(-1)
            if x.size != len(y) * 3072:
                raise UserError(
                    f"{which} batch {n!r} in {source!r} holds {x.size} bytes of images for {len(y)} labels; "
                    "expected 3072 per label"
                )
            # Rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 row-major plane.
            xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    def names(key: bytes) -> list[str]:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in field(spec["meta"], key)]

    if which == "cifar10":
        train_x, train_y = images_labels(spec["train"], b"labels")
        test_x, test_y = images_labels(spec["test"], b"labels")
        return ImageData(which, names(b"label_names"), train_x, train_y, test_x, test_y)
    train_x, train_y = images_labels(spec["train"], b"fine_labels")
    test_x, test_y = images_labels(spec["test"], b"fine_labels")
    class_names, coarse_names = names(b"fine_label_names"), names(b"coarse_label_names")
    coarse = np.concatenate(
        [np.asarray(field(n, b"coarse_labels"), dtype=np.int64) for n in spec["train"] + spec["test"]]
    )
    fine_to_coarse = dict(zip(np.concatenate([train_y, test_y]).tolist(), coarse.tolist()))
    superclass = {class_names[f]: coarse_names[c] for f, c in fine_to_coarse.items()}
    families = {
        "man_made": [c for c in class_names if superclass.get(c) in CIFAR100_MAN_MADE],
        "natural": [c for c in class_names if c in superclass and superclass[c] not in CIFAR100_MAN_MADE],
    }
    families.update({s: [c for c in class_names if superclass.get(c) == s] for s in coarse_names})
    families = {k: v for k, v in families.items() if v}
    return ImageData(which, class_names, train_x, train_y, test_x, test_y, families=families)


# --- TFDS ---------------------------------------------------------------------------------------


def read_tfds(
    name: str,
    *,
    data_dir: str | None,
    image_size: int,
    test_fraction: float = 0.2,
    seed: int = 0,
    download: bool = False,
) -> ImageData:
    """A TFDS image-classification dataset: split "train", and "test" or else a held-out fraction."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"TFDS dataset {name!r} is unknown to tensorflow-datasets; see https://www.tensorflow.org/datasets/catalog"
        ) from None
    except (ValueError, AssertionError) as e:  # a malformed name, or an unknown config or version
        raise UserError(
            f"TFDS dataset {name!r} cannot be built: {_first_line(e)}; allowed: NAME[/CONFIG][:VERSION]"
        ) from None
    if not builder.is_prepared():
        if not download:
            raise UserError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; "
                f"prepare it (tfds build {name} --data_dir DIR) and pass that data_dir"
            )
        builder.download_and_prepare()
    info = builder.info
    keys = info.supervised_keys
    # Supervised keys may also be nested structures; only a plain (image, label) pair will do.
    plain = isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) and k in info.features for k in keys)
    image_feature, label_feature = (info.features[k] for k in keys) if plain else (None, None)
    if not isinstance(image_feature, tfds.features.Image) or not isinstance(label_feature, tfds.features.ClassLabel):
        raise UserError(
            f"TFDS dataset {name!r} is not image classification; "
            "allowed: datasets whose supervised keys are (image, class label)"
        )
    if "train" not in info.splits:
        raise UserError(f"TFDS dataset {name!r} has no 'train' split; its splits: {', '.join(info.splits)}")
    splits = [s for s in ("train", "test") if s in info.splits]
    if None not in image_feature.shape:  # fixed-shape images load as one batch per split
        loaded = [tfds.as_numpy(builder.as_dataset(split=s, as_supervised=True, batch_size=-1)) for s in splits]
        xs = [_to_rgb(x) for x, _ in loaded]
    else:  # variable sizes come one by one
        loaded = [list(zip(*tfds.as_numpy(builder.as_dataset(split=s, as_supervised=True)))) for s in splits]
        xs = _stack_parts([list(images) for images, _ in loaded], image_size)
    ys = [np.asarray(labels, dtype=np.int64) for _, labels in loaded]
    if len(splits) == 2:
        (train_x, test_x), (train_y, test_y) = xs, ys
    else:
        train_x, train_y, test_x, test_y = carve_validation(xs[0], ys[0], test_fraction, seed)
    return ImageData(f"tfds:{name}", list(label_feature.names), train_x, train_y, test_x, test_y)
