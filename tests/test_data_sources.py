"""Dataset loading from small data each test writes itself (never /work/shared/data)."""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfxfer.data import sources
from tfxfer.data.registry import list_datasets, load_dataset
from tfxfer.errors import UserError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# A few real CIFAR-100 classes: (fine, coarse superclass).
CIFAR100_CLASSES = [
    ("apple", "fruit_and_vegetables"),
    ("bottle", "food_containers"),
    ("bus", "vehicles_1"),
    ("whale", "aquatic_mammals"),
]


@pytest.fixture(autouse=True)
def default_cache(tmp_path_factory, monkeypatch):
    """Keep cache writes out of the home directory (and out of tmp_path, where the image folders
    are), and ignore the developer's CIFAR copies."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TFXFER_CACHE", str(cache))
    monkeypatch.delenv("TFXFER_CIFAR10", raising=False)
    monkeypatch.delenv("TFXFER_CIFAR100", raising=False)
    return cache


def _image(value: int, h: int = 8, w: int = 8, channels: int = 3) -> np.ndarray:
    return np.full((h, w, channels), value, dtype=np.uint8)


def _write(path, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if str(path).endswith(".jpg") else tf.io.encode_png
    tf.io.write_file(str(path), encode(image))


def _tree(root, classes, per_class, **image_kw):
    """root/<class>/<i>.png with pixel value 10*class_index + i."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            _write(root / name / f"{i}.png", _image(10 * c + i, **image_kw))


def test_list_and_unknown_dataset():
    assert list_datasets() == ["synthetic", "cifar10", "cifar100", "tfds:NAME", "folder:PATH"]
    allowed = "allowed: synthetic, cifar10, cifar100, tfds:NAME, folder:PATH"
    with pytest.raises(UserError, match=f"'cifar11' is unknown; {allowed}"):
        load_dataset("cifar11")
    with pytest.raises(UserError, match="'folder:' is unknown"):
        load_dataset("folder:")


def test_argument_checks(tmp_path):
    with pytest.raises(UserError, match="path is only for cifar10 and cifar100"):
        load_dataset(f"folder:{tmp_path}", path=str(tmp_path))
    with pytest.raises(UserError, match="test_fraction 1.5 is out of range"):
        load_dataset(f"folder:{tmp_path}", test_fraction=1.5)
    with pytest.raises(UserError, match="image_size -1 is invalid"):
        load_dataset(f"folder:{tmp_path}", image_size=-1)


def test_synthetic_passes_caps_and_seed_through():
    pytest.importorskip("tfxfer.data.synthetic")
    data = load_dataset("synthetic", train_per_class=2, test_per_class=1, seed=1)
    n = len(data.class_names)
    assert data.train_x.shape == (2 * n, 32, 32, 3) and data.test_x.shape == (n, 32, 32, 3)


def test_folder_with_train_and_test(tmp_path):
    _tree(tmp_path / "train", ["b", "a"], 3, h=6, w=5)
    _tree(tmp_path / "test", ["b", "a"], 2, h=6, w=5)
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    _write(tmp_path / "train" / "a" / "9.jpg", _image(200, h=6, w=5))
    data = load_dataset(f"folder:{tmp_path}")
    assert data.name == f"folder:{tmp_path}"
    assert data.class_names == ["a", "b"]  # sorted folder names
    assert data.train_x.shape == (7, 6, 5, 3) and data.train_x.dtype == np.uint8  # one common size: kept
    assert data.test_x.shape == (4, 6, 5, 3)
    assert data.train_y.tolist() == [0, 0, 0, 0, 1, 1, 1] and data.train_y.dtype == np.int64
    # PNG is lossless: folder "a" is the second class written, so its pixels are 10..12.
    assert data.train_x[:3, 0, 0, 0].tolist() == [10, 11, 12]
    assert abs(int(data.train_x[3, 0, 0, 0]) - 200) <= 3  # the JPEG, after 0.png..2.png


def test_grayscale_folder_of_mixed_sizes_is_resized_to_rgb(tmp_path):
    for i, size in enumerate([10, 14, 20]):
        _write(tmp_path / "train" / "g" / f"{i}.png", _image(50 + i, size, size, channels=1))
        _write(tmp_path / "test" / "g" / f"{i}.png", _image(50 + i, size, size + 1, channels=1))
    data = load_dataset(f"folder:{tmp_path}", image_size=32)
    assert data.train_x.shape == (3, 32, 32, 3) and data.test_x.shape == (3, 32, 32, 3)
    assert data.train_x[:, 16, 16].tolist() == [[50] * 3, [51] * 3, [52] * 3]


def test_uniform_grayscale_and_rgba_keep_native_size(tmp_path):
    _tree(tmp_path / "gray", ["x", "y"], 2, h=12, w=12, channels=1)
    _tree(tmp_path / "rgba", ["x", "y"], 2, h=12, w=12, channels=4)
    for kind in ("gray", "rgba"):
        data = load_dataset(f"folder:{tmp_path / kind}", image_size=32, test_fraction=0.5)
        assert data.train_x.shape[1:] == (12, 12, 3) and data.test_x.shape[1:] == (12, 12, 3)


def test_palette_png_becomes_rgb(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        for i in range(2):
            (tmp_path / f"k{c}").mkdir(exist_ok=True)
            pil.new("RGB", (9, 7), colour).convert("P").save(tmp_path / f"k{c}" / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.5)
    assert data.train_x.shape == (2, 7, 9, 3)
    assert data.train_x[0, 0, 0].tolist() == [255, 0, 0] and data.train_x[1, 0, 0].tolist() == [0, 0, 255]


def test_jpeg_decoding_matches_pil(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for part in ("train", "test"):
        _write(tmp_path / part / "k" / "0.jpg", noise)
    data = load_dataset(f"folder:{tmp_path}")
    assert np.array_equal(data.train_x[0], np.asarray(pil.open(tmp_path / "train" / "k" / "0.jpg").convert("RGB")))


def test_folder_without_test_holds_out_a_seeded_stratified_fraction(tmp_path):
    _tree(tmp_path, ["a", "b", "c"], 10)
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.3, seed=1)
    assert np.bincount(data.test_y).tolist() == [3, 3, 3] and np.bincount(data.train_y).tolist() == [7, 7, 7]
    ids = lambda x: set(x[:, 0, 0, 0].tolist())  # noqa: E731 - pixel value identifies the image
    assert not ids(data.train_x) & ids(data.test_x) and len(ids(data.train_x) | ids(data.test_x)) == 30
    again = load_dataset(f"folder:{tmp_path}", test_fraction=0.3, seed=1)
    assert np.array_equal(again.test_x, data.test_x) and np.array_equal(again.train_y, data.train_y)
    other = load_dataset(f"folder:{tmp_path}", test_fraction=0.3, seed=2)
    assert ids(other.test_x) != ids(data.test_x)


def test_per_class_caps_are_seeded(tmp_path):
    _tree(tmp_path / "train", ["a", "b"], 6)
    _tree(tmp_path / "test", ["a", "b"], 4)
    data = load_dataset(f"folder:{tmp_path}", train_per_class=2, test_per_class=3, seed=0)
    assert np.bincount(data.train_y).tolist() == [2, 2] and np.bincount(data.test_y).tolist() == [3, 3]
    same = load_dataset(f"folder:{tmp_path}", train_per_class=2, seed=0)
    assert np.array_equal(same.train_x, data.train_x) and len(same.test_y) == 8
    picks = {tuple(load_dataset(f"folder:{tmp_path}", train_per_class=2, seed=s).train_x[:, 0, 0, 0]) for s in range(4)}
    assert len(picks) > 1
    with pytest.raises(UserError, match="train_per_class 0 is invalid"):
        load_dataset(f"folder:{tmp_path}", train_per_class=0)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no class folders"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "noimages" / "cls").mkdir(parents=True)
    (tmp_path / "noimages" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="'.*cls' has no images"):
        load_dataset(f"folder:{tmp_path / 'noimages'}")
    _tree(tmp_path / "onlytrain" / "train", ["a"], 1)
    with pytest.raises(UserError, match="has train/ but no test/"):
        load_dataset(f"folder:{tmp_path / 'onlytrain'}")
    _tree(tmp_path / "mismatch" / "train", ["a", "b"], 1)
    _tree(tmp_path / "mismatch" / "test", ["a", "c"], 1)
    with pytest.raises(UserError, match="only in train: b; only in test: c"):
        load_dataset(f"folder:{tmp_path / 'mismatch'}")
    _tree(tmp_path / "corrupt", ["a"], 2)
    (tmp_path / "corrupt" / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="cannot read image '.*1.png'"):
        load_dataset(f"folder:{tmp_path / 'corrupt'}", test_fraction=0.5)


def test_second_load_hits_the_cache_and_a_changed_file_invalidates_it(tmp_path, monkeypatch, default_cache):
    root, cache = tmp_path / "imgs", tmp_path / "mycache"
    _tree(root / "train", ["a", "b"], 2)
    _tree(root / "test", ["a", "b"], 1)
    first = load_dataset(f"folder:{root}", cache_dir=str(cache))
    assert len(list(cache.glob("*.npz"))) == 1

    decoded = []
    real_decode = sources._decode_files
    monkeypatch.setattr(sources, "_decode_files", lambda paths: decoded.append(paths) or real_decode(paths))
    second = load_dataset(f"folder:{root}", cache_dir=str(cache))
    assert decoded == []
    assert np.array_equal(first.train_x, second.train_x) and first.class_names == second.class_names

    _write(root / "train" / "a" / "0.png", _image(99, 9, 9))  # new content, new size
    third = load_dataset(f"folder:{root}", cache_dir=str(cache), image_size=8)
    assert len(decoded) == 1 and third.train_x.shape == (4, 8, 8, 3)
    load_dataset(f"folder:{root}", cache_dir=str(cache), image_size=8)
    assert len(decoded) == 1
    touched = root / "test" / "b" / "0.png"  # same size, newer mtime: rewritten in place
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    load_dataset(f"folder:{root}", cache_dir=str(cache), image_size=8)
    assert len(decoded) == 2
    # The default cache directory comes from $TFXFER_CACHE.
    load_dataset(f"folder:{root}")
    assert len(list(default_cache.glob("*.npz"))) == 1


def test_unreadable_cache_file_is_rebuilt(tmp_path):
    _tree(tmp_path / "imgs", ["a", "b"], 2)
    load_dataset(f"folder:{tmp_path / 'imgs'}", cache_dir=str(tmp_path / "c"), test_fraction=0.5)
    (cache_file,) = (tmp_path / "c").glob("*.npz")
    cache_file.write_bytes(b"garbage")
    data = load_dataset(f"folder:{tmp_path / 'imgs'}", cache_dir=str(tmp_path / "c"), test_fraction=0.5)
    assert len(data.train_y) == 2
    with np.load(cache_file) as rebuilt:
        assert rebuilt["all_x"].shape == (4, 8, 8, 3)


# --- CIFAR in the official python format ----------------------------------------------------------


def _cifar_rows(labels: list[int]) -> np.ndarray:
    """[N, 3072] rows whose red plane is the label, green plane 100, blue plane 200."""
    rows = np.zeros((len(labels), 3, 1024), dtype=np.uint8)
    rows[:, 0] = np.asarray(labels)[:, None]
    rows[:, 1], rows[:, 2] = 100, 200
    return rows.reshape(len(labels), 3072)


def _cifar_files(which: str, per_class: int = 2) -> dict[str, bytes]:
    """The member files of a tiny official-format archive: a few images per class."""
    if which == "cifar10":
        labels = [c for c in range(10) for _ in range(per_class)]
        batch = lambda: pickle.dumps({b"data": _cifar_rows(labels), b"labels": labels})  # noqa: E731
        files = {f"data_batch_{i}": batch() for i in range(1, 6)}
        files["test_batch"] = batch()
        files["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in CIFAR10_NAMES]})
        return files
    coarse_names = sorted({c for _, c in CIFAR100_CLASSES})
    fine = [f for f in range(len(CIFAR100_CLASSES)) for _ in range(per_class)]
    coarse = [coarse_names.index(CIFAR100_CLASSES[f][1]) for f in fine]
    batch = pickle.dumps({b"data": _cifar_rows(fine), b"fine_labels": fine, b"coarse_labels": coarse})
    meta = {
        b"fine_label_names": [f.encode() for f, _ in CIFAR100_CLASSES],
        b"coarse_label_names": [c.encode() for c in coarse_names],
    }
    return {"train": batch, "test": batch, "meta": pickle.dumps(meta)}


def _cifar_archive(path, which: str, files: dict[str, bytes] | None = None):
    top = "cifar-10-batches-py" if which == "cifar10" else "cifar-100-python"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in (files or _cifar_files(which)).items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_cifar10_archive_and_extracted_folder(tmp_path, monkeypatch):
    archive = _cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10")
    data = load_dataset("cifar10", path=str(archive))
    assert data.name == "cifar10" and data.class_names == CIFAR10_NAMES
    assert data.train_x.shape == (100, 32, 32, 3) and data.test_x.shape == (20, 32, 32, 3)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int64
    # Channel planes land in the last axis: red = label, green = 100, blue = 200.
    assert data.train_x[7, 5, 9].tolist() == [data.train_y[7], 100, 200]
    assert data.families == {
        "vehicles": ["airplane", "automobile", "ship", "truck"],
        "animals": ["bird", "cat", "deer", "dog", "frog", "horse"],
    }

    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    for form in (tmp_path / "x", tmp_path / "x" / "cifar-10-batches-py", tmp_path):
        other = load_dataset("cifar10", path=str(form))
        assert np.array_equal(other.train_x, data.train_x) and other.class_names == CIFAR10_NAMES

    monkeypatch.setenv("TFXFER_CIFAR10", str(archive))
    assert np.array_equal(load_dataset("cifar10", test_per_class=1).test_y, np.arange(10))
    monkeypatch.setenv("TFXFER_CIFAR10", str(tmp_path / "moved"))
    with pytest.raises(UserError, match=r"'.*moved' \(from \$TFXFER_CIFAR10\) does not exist"):
        load_dataset("cifar10")


def test_cifar100_archive_families_from_coarse_labels(tmp_path):
    data = load_dataset("cifar100", path=str(_cifar_archive(tmp_path / "c100.tar.gz", "cifar100")))
    assert data.class_names == ["apple", "bottle", "bus", "whale"]
    assert data.train_x.shape == (8, 32, 32, 3) and np.bincount(data.test_y).tolist() == [2] * 4
    assert data.families["man_made"] == ["bottle", "bus"]
    assert data.families["natural"] == ["apple", "whale"]
    assert data.families["vehicles_1"] == ["bus"] and data.families["aquatic_mammals"] == ["whale"]


def test_cifar_class_folder_tree_gets_families(tmp_path):
    _tree(tmp_path / "train", ["airplane", "cat"], 2)
    _tree(tmp_path / "test", ["airplane", "cat"], 1)
    data = load_dataset("cifar10", path=str(tmp_path))
    assert data.name == "cifar10" and data.families == {"vehicles": ["airplane"], "animals": ["cat"]}


def test_corrupt_or_incomplete_cifar_archives(tmp_path):
    archive = _cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="'.*truncated.tar.gz' is corrupt or truncated"):
        load_dataset("cifar10", path=str(truncated))

    files = _cifar_files("cifar10")
    del files["test_batch"]
    with pytest.raises(UserError, match="lacks test_batch"):
        load_dataset("cifar10", path=str(_cifar_archive(tmp_path / "partial.tar.gz", "cifar10", files)))

    files = _cifar_files("cifar10")
    files["test_batch"] = pickle.dumps({b"data": _cifar_rows([0, 1]), b"labels": [0, 1, 2]})
    with pytest.raises(UserError, match="'test_batch' .* 6144 bytes of images for 3 labels"):
        load_dataset("cifar10", path=str(_cifar_archive(tmp_path / "mislabelled.tar.gz", "cifar10", files)))

    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "meta").write_bytes(_cifar_files("cifar100")["meta"])
    with pytest.raises(UserError, match="'.*dir/train' is missing"):
        load_dataset("cifar100", path=str(tmp_path / "dir"))
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(UserError, match="is not recognised; allowed: a folder with train/<class>/"):
        load_dataset("cifar100", path=str(tmp_path / "unrelated"))
    with pytest.raises(UserError, match=r"'.*nowhere' \(from path\) does not exist"):
        load_dataset("cifar10", path=str(tmp_path / "nowhere"))


def test_cifar_pickle_may_not_run_code(tmp_path):
    files = _cifar_files("cifar10")
    files["batches.meta"] = pickle.dumps({b"label_names": os.getcwd})  # any callable global
    with pytest.raises(UserError, match="corrupt or truncated .*unexpected object"):
        load_dataset("cifar10", path=str(_cifar_archive(tmp_path / "evil.tar.gz", "cifar10", files)))


def test_cifar_without_local_copy_explains_how_to_give_one(monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(sources, "read_tfds", no_network)
    expected = r"cifar100: no local copy .*ConnectionError: network unreachable.*\$TFXFER_CIFAR100"
    with pytest.raises(UserError, match=expected):
        load_dataset("cifar100")


# --- TFDS, from a tiny dataset prepared locally --------------------------------------------------


class TfxferTinyGray(tfds.core.GeneratorBasedBuilder):
    """Two classes of grayscale images of varying size, train split only."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(names=["dark", "light"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(12):
            yield i, {"image": _image(40 + i, 6 + i, 9, channels=1), "label": i % 2}


def test_tfds_dataset_with_variable_sizes_and_no_test_split(tmp_path):
    TfxferTinyGray(data_dir=str(tmp_path)).download_and_prepare()
    data = load_dataset("tfds:tfxfer_tiny_gray", data_dir=str(tmp_path), image_size=16, test_fraction=0.25)
    assert data.name == "tfds:tfxfer_tiny_gray" and data.class_names == ["dark", "light"]
    assert data.train_x.shape == (8, 16, 16, 3) and data.test_x.shape == (4, 16, 16, 3)
    assert np.bincount(data.test_y).tolist() == [2, 2]


class TfxferTinyRgb(tfds.core.GeneratorBasedBuilder):
    """Three classes of fixed-size RGB images with train and test splits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(8, 8, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(9), "test": self._generate_examples(3)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": _image(i), "label": i % 3}


def test_tfds_dataset_with_fixed_size_and_test_split(tmp_path):
    TfxferTinyRgb(data_dir=str(tmp_path)).download_and_prepare()
    data = load_dataset("tfds:tfxfer_tiny_rgb", data_dir=str(tmp_path))
    assert data.class_names == ["0", "1", "2"]
    assert data.train_x.shape == (9, 8, 8, 3) and data.test_x.shape == (3, 8, 8, 3)
    assert sorted(zip(data.train_x[:, 0, 0, 0].tolist(), data.train_y.tolist())) == [(i, i % 3) for i in range(9)]


def test_tfds_errors(tmp_path):
    with pytest.raises(UserError, match="'no_such_dataset_xyz' is unknown to tensorflow-datasets"):
        load_dataset("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="'mnist' is not prepared in"):
        load_dataset("tfds:mnist", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="cannot be built"):
        load_dataset("tfds:mnist:99.0.0", data_dir=str(tmp_path))
