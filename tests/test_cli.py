"""The command line: help, bad input as one clear line with exit code 2, image folders end to end."""
import gzip
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import only_result, run_tfxfer, write_config
from tfxfer.cli import main


def cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def write_images(root, classes, count, shape, fmt="png"):
    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(count):
            # A class-specific brightness makes the folder learnable.
            img = np.clip(rng.normal(40 + 60 * i, 20, shape), 0, 255).astype(np.uint8)
            data = tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img)
            (root / name / f"{j}.{fmt}").write_bytes(data.numpy())


def test_help_lists_commands_and_options(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "train" in out and "list" in out
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0 and "--treatment" in out and "--n" in out and "--split-seed" in out


def test_list_archs(capsys):
    code, out, _ = cli(capsys, "list", "archs")
    assert code == 0 and out.split() == ["caffenet", "cifar8", "cifar8-bn", "zfnet"]


def test_list_variants_names_every_registered_variant(capsys):
    from tfxfer.models import VARIANTS

    code, out, _ = cli(capsys, "list", "variants")
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [r[0] for r in rows] == list(VARIANTS) and "conv1-7x7-s2" in VARIANTS
    assert rows[-1][1] == "layer 1 as Zeiler & Fergus's: 7x7, stride 2"


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "cifar-10-python.tar.gz"
    corrupt.write_bytes(gzip.compress(b"not a tar archive" * 100)[:60])
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("recipe:\n  learning_rate: 0.1\n")
    return {
        "treatment": (["--treatment", "CnB", "--n", "3"],
                      "Invalid value for '--treatment': 'CnB' is not one of 'baseA', 'baseB', "),
        "n": (["--treatment", "BnB", "--n", "9"], "Invalid value for '--n': 9 is not in the range 0<=x<=7"),
        "no n": (["--treatment", "AnB"], "n=None is out of range for AnB; allowed: 1..7"),
        "dataset": (["--dataset", "imagenet"], "dataset 'imagenet' is unknown; allowed: synthetic, cifar10"),
        # A misspelt name beside a path is named as such, not as a path given to the wrong dataset.
        "dataset and path": (["--dataset", "cifar11", "--data-path", tmp_path], "dataset 'cifar11' is unknown"),
        "arch": (["--arch", "resnet50"], "Invalid value for '--arch': 'resnet50' is not one of 'caffenet', 'cifar8', "
                                        "'cifar8-bn', 'zfnet'"),
        "config key": (["--config", bad_key], "config key recipe.learning_rate does not exist; allowed keys"),
        "config value": (["--precision", "fp8"], "config key recipe.precision: 'fp8' is not allowed"),
        "config file": (["--config", tmp_path / "nope.yaml"], "config '"),
        "missing archive": (["--dataset", "cifar10", "--data-path", tmp_path / "missing.tar.gz"], "missing.tar.gz"),
        "corrupt archive": (["--dataset", "cifar10", "--data-path", corrupt], "cifar-10-python.tar.gz"),
        "empty folder": (["--dataset", f"folder:{tmp_path / 'empty'}"], "empty"),
    }


CASES = ["treatment", "n", "no n", "dataset", "dataset and path", "arch", "config key", "config value", "config file",
         "missing archive", "corrupt archive", "empty folder"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_nothing_written(case, bad_inputs, tmp_path, capsys):
    args, expected = bad_inputs[case]
    code, out, err = cli(capsys, "train", *args, "--out", tmp_path / "runs")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfxfer: error: "), err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_input_from_a_shell_is_one_line_before_tensorflow_loads(tmp_path):
    # Flags and configs are checked before TensorFlow is imported, so its C++ start-up lines
    # (which TF_CPP_MIN_LOG_LEVEL does not silence) never bury the error.
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("recipe:\n  learning_rate: 0.1\n")
    for args, expected in [
        (["train", "--treatment", "BnB", "--n", "8"], "Invalid value for '--n': 8 is not in the range 0<=x<=7"),
        (["train", "--treatment", "BnB", "--n", "0"], "n=0 is out of range for BnB; allowed: 1..7"),
        (["train", "--treatment", "AnB"], "n=None is out of range for AnB; allowed: 1..7"),
        (["experiment", bad_key], "recipe.learning_rate"),
    ]:
        res = run_tfxfer(*args, "--out", tmp_path / "runs")
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
        assert res.stderr.startswith("tfxfer: error: ") and expected in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_grayscale_folder_of_other_size_trains(tmp_path):
    """1-channel 40×40 PNGs in train/ and test/ class folders become 32×32×3 inputs and train."""
    for part, count in (("train", 30), ("test", 10)):
        write_images(tmp_path / "gray" / part, ["dark", "mid", "light"], count, (40, 40, 1))
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "runs",
                       dataset={"name": f"folder:{tmp_path / 'gray'}", "train_per_class": None,
                                "test_per_class": None},
                       split={"kind": "explicit", "A": ["dark"], "B": ["mid", "light"]}, recipe={"epochs": 3})
    res = run_tfxfer("train", "--config", cfg, "--treatment", "baseB", "--quiet")
    assert res.returncode == 0, res.stderr
    record = only_result(tmp_path / "runs")
    assert record["classes"] == ["mid", "light"] and record["split"] == "explicit"
    assert record["top1"] >= 0.9  # brightness separates the two classes


@pytest.mark.parametrize("args, message", [
    (["probe", "RUN", "--per-class", "5,,30"], "Invalid value for '--per-class': '5,,30' is not a comma-separated "
                                               "list of K"),
    (["probe", "RUN", "--per-class", "5,0"], "Invalid value for '--per-class': 0 is not in the range x>=1"),
    (["export", "RUN", "--layers", "conv5,fc9", "--out", "x"], "Invalid value for '--layers': 'fc9' is not one of "
                                                               "'conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6'"),
    (["experiment", "quickstart", "--jobs", "0"], "Invalid value for '--jobs': 0 is not in the range x>=1"),
    (["tune", "quickstart", "--treatment", "XnY"], "Invalid value for '--treatment': 'XnY' is not one of 'baseA'"),
])
def test_a_value_its_type_refuses_is_one_line_exit_2(args, message, capsys, tmp_path):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == "" and err.startswith(f"tfxfer: error: {message}") and err.count("\n") == 1, err


def test_help_reads_no_registry_that_loads_tensorflow():
    # Choices from registries in modules that import TensorFlow (probes, export) are read when a value
    # is checked, not to print --help.
    code = ("import sys\nfrom click.testing import CliRunner\nfrom tfxfer.cli import cli\n"
            "for c in (['probe'], ['similarity'], ['export'], ['visualize', 'deconv'], ['train']):\n"
            "    assert CliRunner().invoke(cli, [*c, '--help']).exit_code == 0, c\n"
            "print('tensorflow' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["False"], res.stderr
