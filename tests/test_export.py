"""Feature-extractor export: signatures, equality with the Keras model, TF Serving layout, tools."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from serving_helpers import (
    LAYERS,
    decoded,
    encode,
    keras_features,
    random_images,
    trained_run,
)
from tensorflow_serving.config import model_server_config_pb2

from tfxfer.cli import main
from tfxfer.errors import UserError
from tfxfer.export import export_run, versions
from tfxfer.export.layout import publish
from tfxfer.serving.batching import BatchingOptions

TOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    finished = trained_run(tmp)
    config = tmp / "serving" / "models.config"
    path = export_run(finished.run_dir, list(LAYERS), tmp / "exports", name="feat", serving_config=config)
    return finished, path, config


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), (sorted(a), sorted(b))
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_signatures_have_named_inputs_and_outputs(exported):
    _, path, _ = exported
    sigs = tf.saved_model.load(str(path)).signatures
    assert set(sigs) == {"serving_default", "features_from_pixels", "features_from_pixels_uint8", "classify"}
    for name in ("serving_default", "features_from_pixels", "features_from_pixels_uint8"):
        assert set(sigs[name].structured_outputs) == set(LAYERS)
    assert list(sigs["serving_default"].structured_input_signature[1]) == ["images"]
    assert list(sigs["features_from_pixels"].structured_input_signature[1]) == ["pixels"]
    assert sigs["features_from_pixels_uint8"].structured_input_signature[1]["pixels"].dtype == tf.uint8
    assert set(sigs["classify"].structured_outputs) == {"probabilities", "top_k_ids", "top_k_names", "top_k_scores"}


def test_features_equal_the_keras_model(exported):
    finished, path, _ = exported
    sigs = tf.saved_model.load(str(path)).signatures
    images = random_images(12)
    want = keras_features(finished, images)
    assert want["conv5"].shape == (12, finished.model.get_layer("conv5").output.shape[-1])  # pooled
    from_uint8 = {k: v.numpy() for k, v in sigs["features_from_pixels_uint8"](pixels=tf.constant(images)).items()}
    from_float = {k: v.numpy() for k, v in
                  sigs["features_from_pixels"](pixels=tf.constant(images.astype(np.float32))).items()}
    png = {k: v.numpy() for k, v in sigs["serving_default"](images=tf.constant([encode(x) for x in images])).items()}
    assert max_diff(from_uint8, want) <= TOL
    assert max_diff(from_float, want) <= TOL
    assert max_diff(png, want) <= TOL  # PNG is lossless: same pixels
    # JPEG is lossy: the export must decode it exactly as the data pipeline decodes image files.
    jpegs = [encode(x, "jpeg") for x in images]
    jpeg = {k: v.numpy() for k, v in sigs["serving_default"](images=tf.constant(jpegs)).items()}
    assert max_diff(jpeg, keras_features(finished, np.stack([decoded(j) for j in jpegs]))) <= TOL


def test_serving_resizes_other_image_sizes_like_the_pipeline(exported):
    finished, path, _ = exported
    sigs = tf.saved_model.load(str(path)).signatures
    big = random_images(3, size=48, seed=1)
    got = {k: v.numpy() for k, v in sigs["serving_default"](images=tf.constant([encode(x) for x in big])).items()}
    assert max_diff(got, keras_features(finished, big)) <= TOL


def test_classify_gives_probabilities_and_top_k_names(exported):
    finished, path, _ = exported
    out = tf.saved_model.load(str(path)).signatures["classify"](
        images=tf.constant([encode(x) for x in random_images(4)]))
    probs = out["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    ids = out["top_k_ids"].numpy()
    assert ids.shape == (4, 5)
    np.testing.assert_array_equal(ids[:, 0], probs.argmax(axis=1))
    names = np.array(finished.class_names)[ids]
    np.testing.assert_array_equal(out["top_k_names"].numpy().astype(str), names)
    np.testing.assert_allclose(out["top_k_scores"].numpy(), np.take_along_axis(probs, ids, axis=1))


def test_versions_count_up_never_overwrite_and_config_lists_models(exported, tmp_path):
    finished, path, config = exported
    base = path.parent.parent
    assert path.name == "1" and versions(base / "feat") == [1]
    second = export_run(finished.run_dir, ["fc7"], base, name="feat", serving_config=config)
    assert second.name == "2" and versions(base / "feat") == [1, 2]
    with pytest.raises(UserError, match="version 1 of model 'feat' already exists"):
        export_run(finished.run_dir, ["fc7"], base, name="feat", version=1)
    export_run(finished.run_dir, ["fc6"], base, name="other", version=7, serving_config=config)
    parsed = text_format.Parse(config.read_text(), model_server_config_pb2.ModelServerConfig())
    entries = {m.name: m for m in parsed.model_config_list.config}
    assert set(entries) == {"feat", "other"}
    assert entries["feat"].base_path == str((base / "feat").resolve())
    assert entries["other"].model_platform == "tensorflow"
    # Nothing half-written is left beside the versions.
    assert sorted(p.name for p in (base / "feat").iterdir()) == ["1", "2"]
    provenance = json.loads((second / "assets.extra" / "tfxfer_export.json").read_text())
    assert provenance["run_id"] == finished.record["run_id"] and provenance["layers"] == ["fc7"]


def test_failed_write_leaves_no_version(tmp_path):
    def write(tmp):
        (tmp / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish(tmp_path, "m", None, write, {})
    assert list((tmp_path / "m").iterdir()) == []


def test_saved_model_cli_show_and_run(exported, tmp_path):
    finished, path, _ = exported
    # The console script TensorFlow installs beside this interpreter.
    cli = [str(Path(sys.executable).parent / "saved_model_cli")]
    env_quiet = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    show = subprocess.run([*cli, "show", "--dir", str(path), "--all"], check=False, capture_output=True, text=True,
                          env={**os.environ, **env_quiet}, timeout=120)
    assert show.returncode == 0, show.stderr
    for text in ("signature_def['serving_default']", "inputs['images']", "dtype: DT_STRING",
                 "signature_def['features_from_pixels_uint8']", "inputs['pixels']", "outputs['fc7']",
                 "signature_def['classify']", "outputs['top_k_names']"):
        assert text in show.stdout, text
    images = random_images(3, seed=2)
    np.save(tmp_path / "pixels.npy", images)
    run = subprocess.run([*cli, "run", "--dir", str(path), "--tag_set", "serve", "--signature_def",
                          "features_from_pixels_uint8", "--inputs", f"pixels={tmp_path / 'pixels.npy'}",
                          "--outdir", str(tmp_path / "out")], check=False, capture_output=True, text=True,
                         env={**os.environ, **env_quiet}, timeout=120)
    assert run.returncode == 0, run.stderr
    got = {n: np.load(tmp_path / "out" / f"{n}.npy") for n in LAYERS}
    assert max_diff(got, keras_features(finished, images)) <= TOL


def test_cli_export_flatten_and_errors(exported, tmp_path, capsys):
    finished, _, _ = exported
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(finished.run_dir), "--layers", "fc7,conv5", "--out", str(tmp_path / "ex"),
              "--conv", "flatten", "--serving-config", str(tmp_path / "models.config")])
    assert exit_info.value.code == 0 and "exported" in capsys.readouterr().out
    (name,) = [p.name for p in (tmp_path / "ex").iterdir()]
    assert name == finished.record["run_id"].replace("+", "_ft")
    sig = tf.saved_model.load(str(tmp_path / "ex" / name / "1")).signatures["features_from_pixels_uint8"]
    images = random_images(2, seed=3)
    got = {k: v.numpy() for k, v in sig(pixels=tf.constant(images)).items()}
    want = keras_features(finished, images, ["conv5", "fc7"], conv="flatten")
    assert got["conv5"].shape == (2, math.prod(finished.model.get_layer("conv5").output.shape[1:]))
    assert max_diff(got, want) <= TOL
    # Errors a user can make: one line, exit 2, nothing written.
    for args, message in (
        (["--layers", "fc9"], "Invalid value for '--layers': 'fc9' is not one of 'conv1', "),
        (["--layers", "fc7", "--name", name, "--version", "1"], "already exists"),
        (["--layers", "fc7", "--name", "a/b"], "model name 'a/b' invalid"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(finished.run_dir), "--out", str(tmp_path / "ex"), "--serving-config", "", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in (tmp_path / "ex").iterdir()] == [name]
    assert versions(tmp_path / "ex" / name) == [1]


def test_serving_folder_runs_the_documented_command_line():
    root = Path(__file__).resolve().parent.parent / "serving"
    text_format.Parse((root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["tensorflow-serving"]
    assert compose["image"].startswith("tensorflow/serving:")
    assert compose["ports"] == ["127.0.0.1:8501:8501", "127.0.0.1:8500:8500"]
    readme = (root / "README.md").read_text()
    command = readme.split("```bash\ntensorflow_model_server")[1].split("```")[0].replace("\\\n", " ").split()
    # The container runs the README's command line, with the serving folder mounted at /serving.
    assert [flag.replace("/serving/", "serving/") for flag in compose["command"]] == command
    batching = dict(re.findall(r"^(\w+) \{ value: (\d+) \}", (root / "batching_parameters.txt").read_text(), re.MULTILINE))
    # TF Serving batches as `tfxfer serve` does by default.
    defaults = BatchingOptions()
    assert batching == {"max_batch_size": str(defaults.max_batch_size),
                        "batch_timeout_micros": str(round(defaults.timeout_s * 1e6)),
                        "num_batch_threads": str(defaults.num_batch_threads), "max_enqueued_batches": "100"}
