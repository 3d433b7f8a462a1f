"""The converged recipe: cifar8-bn (batch norm in every conv block), warm-up + decay schedules, label
smoothing, the equal-training control (baseB-long) and the report's convergence flags."""
import json

import keras
import numpy as np
import pytest

from conftest import tiny_config
from helpers import run_tfxfer, write_config
from test_report import hand_made, record
from tfxfer.config import Config
from tfxfer.errors import UserError
from tfxfer.experiments.planner import plan_experiment
from tfxfer.experiments.runner import run
from tfxfer.models import LAYER_NAMES, build_model, get_arch
from tfxfer.models.blocks import FusedBatchNorm
from tfxfer.report import markdown
from tfxfer.report.analysis import Grid, convergence, findings, table1
from tfxfer.runs.finished import load_run
from tfxfer.runs.spec import RunSpec
from tfxfer.training.loop import WarmupDecay

BN = {"arch": {"name": "cifar8-bn", "width": 0.25}}


def bn_state(model, layer):
    """A block's batch-norm weights: gamma, beta, moving mean, moving variance."""
    return [v.numpy().copy() for v in model.get_layer(layer).bn.weights]


def all_weights(model, layer):
    return [w.copy() for w in model.get_layer(layer).get_weights()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_cifar8_bn_is_cifar8_with_batch_norm_in_each_conv_block():
    spec, plain = get_arch("cifar8-bn"), get_arch("cifar8")
    assert spec.layers == plain.layers == LAYER_NAMES
    assert [(c.filters, c.kernel, c.pool) for c in spec.convs] == [(c.filters, c.kernel, c.pool) for c in plain.convs]
    assert all(c.batch_norm for c in spec.convs) and not any(c.batch_norm for c in plain.convs)
    model = build_model(spec, 5)
    block = model.get_layer("conv1")
    assert block.bn is not None and block.conv.use_bias is False  # the BN's offset is the bias
    assert [w.name for w in block.bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_computes_what_keras_batch_norm_does(dtype):
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 6, 6, 4)).astype("float32")
    fused, plain = FusedBatchNorm(dtype=dtype), keras.layers.BatchNormalization(dtype=dtype)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 4))
        layer.beta.assign(np.linspace(-1.0, 1.0, 4))
    tol = 1e-4 if dtype == "float32" else 5e-2
    np.testing.assert_allclose(np.asarray(fused(x, training=True), "float32"),
                               np.asarray(plain(x, training=True), "float32"), atol=tol)
    # One update of the moving statistics, the same up to the fused kernel's unbiased variance (n/(n-1)).
    m = x.shape[0] * x.shape[1] * x.shape[2]
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), atol=1e-4)
    var = lambda layer: (layer.moving_variance.numpy() - 0.99) / 0.01  # noqa: E731
    np.testing.assert_allclose(var(fused), var(plain) * m / (m - 1), rtol=1e-3)
    plain.moving_variance.assign(fused.moving_variance.numpy())
    np.testing.assert_allclose(np.asarray(fused(x, training=False), "float32"),
                               np.asarray(plain(x, training=False), "float32"), atol=tol, rtol=tol)
    # Frozen, it runs in inference mode even when called in training, and its statistics stay.
    fused.trainable = False
    before = fused.moving_mean.numpy().copy()
    np.testing.assert_array_equal(np.asarray(fused(x, training=True)), np.asarray(fused(x, training=False)))
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)
    assert FusedBatchNorm.from_config(fused.get_config()).get_config() == fused.get_config()


def test_warmup_then_decay_schedules():
    cos, lin = WarmupDecay(0.4, 10, 110, "cosine"), WarmupDecay(0.4, 10, 110, "linear")
    for s in (cos, lin):
        assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.2) and float(s(10)) == pytest.approx(0.4)
        assert float(s(110)) == pytest.approx(0.0, abs=1e-7) and float(s(200)) == pytest.approx(0.0, abs=1e-7)
    assert float(cos(60)) == pytest.approx(0.2) and float(lin(60)) == pytest.approx(0.2)
    assert float(cos(35)) == pytest.approx(0.2 * (1 + np.cos(np.pi / 4)))
    assert float(lin(35)) == pytest.approx(0.3)
    assert WarmupDecay.from_config(cos.get_config()).get_config() == cos.get_config()


def test_new_recipe_keys_are_validated():
    for recipe, msg in (({"schedule": "onecycle"}, "step, cosine, linear"),
                        ({"warmup_epochs": 30, "epochs": 30}, r"\[0, epochs = 30\)"),
                        ({"label_smoothing": 1.0}, r"\[0, 1\)"), ({"nesterov": "yes"}, "bool")):
        with pytest.raises(UserError, match=f"recipe.{next(iter(recipe))}.*{msg}"):
            Config.from_dict({"recipe": recipe})
    with pytest.raises(UserError, match="arch 'cifar9' is unknown; allowed: caffenet, cifar8, cifar8-bn"):
        get_arch("cifar9")
    # On load, so that a grid with a misspelt arch names the key before it plans anything.
    with pytest.raises(UserError, match="config key arch.name: 'cifar8-bnn' is not allowed; expected one of "
                                        "caffenet, cifar8, cifar8-bn, zfnet"):
        Config.from_dict({"arch": {"name": "cifar8-bnn"}})


def test_new_keys_at_their_defaults_leave_run_ids_alone():
    old = RunSpec("baseB", 0, Config.from_dict({}))
    for recipe in ({"schedule": "cosine"}, {"nesterov": True}, {"warmup_epochs": 1.0}, {"label_smoothing": 0.1}):
        assert RunSpec("baseB", 0, Config.from_dict({"recipe": recipe})).run_id != old.run_id
    assert RunSpec("baseB", 0, Config.from_dict({"recipe": {"schedule": "step", "nesterov": False}})).run_id == old.run_id


@pytest.fixture(scope="module")
def bn_grid(tmp_path_factory):
    """cifar8-bn: baseB, then BnB (on cached prefix outputs and on the whole network) and BnB+ at n = 3."""
    tmp = tmp_path_factory.mktemp("bn")
    cfg = tiny_config(tmp, **BN, recipe={"optimizer": "sgd", "lr": 0.05, "nesterov": True, "schedule": "linear",
                                         "warmup_epochs": 0.5, "label_smoothing": 0.1, "epochs": 2})
    uncached = tiny_config(tmp, **BN, recipe=cfg.recipe.__dict__ | {"augment": {"pad": 2, "flip": False}},
                           training={"prefix_cache": False})
    out = {"baseB": run(RunSpec("baseB", 0, cfg), verbose=False)}
    out["BnB"] = run(RunSpec("BnB", 3, cfg), verbose=False)
    out["BnB uncached"] = run(RunSpec("BnB", 3, uncached), verbose=False)
    out["BnB+"] = run(RunSpec("BnB+", 3, cfg), verbose=False)
    return {k: (r, load_run(tmp / "runs" / r["run_id"]).model) for k, r in out.items()}


@pytest.mark.parametrize("frozen", ["BnB", "BnB uncached"])
def test_frozen_bn_blocks_keep_the_copied_weights_and_statistics(bn_grid, frozen):
    _, base = bn_grid["baseB"]
    record, model = bn_grid[frozen]
    assert record["base_run_id"] == bn_grid["baseB"][0]["run_id"]
    for layer in LAYER_NAMES[:3]:
        assert same(bn_state(model, layer), bn_state(base, layer)), layer
        assert same(all_weights(model, layer), all_weights(base, layer)), layer
    for layer in ("conv4", "conv5"):  # re-initialized and trained: statistics of their own
        assert not same(bn_state(model, layer), bn_state(base, layer)), layer


def test_fine_tuned_bn_blocks_change_weights_and_statistics(bn_grid):
    _, base = bn_grid["baseB"]
    _, model = bn_grid["BnB+"]
    for layer in LAYER_NAMES[:3]:
        assert not same(bn_state(model, layer), bn_state(base, layer)), layer
        assert not same(all_weights(model, layer)[:1], all_weights(base, layer)[:1]), layer


def test_a_bn_base_learns_the_tiny_task_and_records_its_last_epochs(bn_grid):
    record, _ = bn_grid["baseB"]
    assert record["arch"] == "cifar8-bn" and record["config"]["recipe"]["schedule"] == "linear"
    assert record["top1"] > 2 / 12  # above chance on 12 classes after two epochs
    assert len(record["val_top1_last"]) == 2 and record["val_top1_last"][-1] <= record["best_val_top1"]


def test_equal_training_control_is_planned_once_per_split_with_the_summed_epochs(tmp_path):
    cfg = tiny_config(tmp_path, experiment={"treatments": ["BnB", "BnB+", "AnB+"], "n": [1, 2],
                                            "controls": ["AnB+", "BnB+"],
                                            "splits": [{"kind": "random", "seed": 0}, {"kind": "random", "seed": 1}]})
    plan = plan_experiment(cfg)
    longs = [r for r in plan.runs if r.treatment == "baseB-long"]
    assert len(longs) == 2 and {r.config.split.seed for r in longs} == {0, 1}  # one per split, both treatments'
    assert all(r.trained_config.recipe.epochs == 2 * cfg.recipe.epochs for r in longs)
    assert all(plan.deps[r.run_id] is None for r in longs)
    # Without `controls`, none is planned and no other run changes.
    plain = plan_experiment(tiny_config(tmp_path, experiment={**cfg.experiment.__dict__, "controls": []}))
    assert {r.run_id for r in plain.runs} == {r.run_id for r in plan.runs if r.treatment != "baseB-long"}


def test_the_control_trains_twice_the_epochs_and_records_them(tmp_path):
    cfg = tiny_config(tmp_path, recipe={"epochs": 1})
    rec = run(RunSpec("baseB-long", 0, cfg), verbose=False)
    assert rec["epochs"] == 2 and rec["config"]["recipe"]["epochs"] == 2 and rec["n"] == 0
    on_disk = (tmp_path / "runs" / rec["run_id"] / "config.yaml").read_text()
    assert "epochs: 2" in on_disk
    assert rec["run_id"].startswith("baseB-long-") and rec["run_id"] != RunSpec("baseB", 0, cfg).run_id


def test_a_control_for_a_treatment_that_has_none_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    config = write_config(tmp_path / "c.yaml", out, experiment={"treatments": ["AnB"], "controls": ["AnB"]})
    proc = run_tfxfer("experiment", config, "--out", out, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "tfxfer: error: treatment 'AnB' has no equal-training control "
        "(only fine-tuned copies do: AnA+, AnB+, BnA+, BnB+)"]
    assert not out.exists()
    proc = run_tfxfer("experiment", write_config(tmp_path / "arch.yaml", out, arch={"name": "cifar8-bnn"}), "--out", out,
                      timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.strip().splitlines() == [
        "tfxfer: error: config key arch.name: 'cifar8-bnn' is not allowed; expected one of caffenet, cifar8, "
        "cifar8-bn, zfnet"]
    assert not out.exists()
    proc = run_tfxfer("train", "--config", write_config(tmp_path / "ok.yaml", out), "--arch", "cifar8-bm", "--out", out,
                      timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        "tfxfer: error: Invalid value for '--arch': 'cifar8-bm' is not one of 'caffenet', 'cifar8', 'cifar8-bn'")
    assert not out.exists()


def _with_controls(records, gains):
    """hand_made()'s grid plus a baseB-long per split, `gains[s]` above its baseB; every record with
    the same config and a last-epochs validation top-1, so convergence pairs them."""
    out = []
    for r in records:
        r = dict(r, config={"recipe": {"epochs": 10, "lr": 0.1}}, val_top1_last=[r["top1"] - 0.02, r["top1"]])
        out.append(r)
        if r["treatment"] == "baseB":
            s = r["split_seed"]
            long = record("baseB-long", 0, s, r["top1"] + gains[s])
            # Its validation top-1 ends 0.2 point below its test top-1, so the two gains differ.
            out.append(dict(long, config={"recipe": {"epochs": 20, "lr": 0.1}}, epochs=20,
                            val_top1_last=[long["top1"] - 0.002]))
    return out


def test_table1s_equal_training_column_and_the_findings_against_it():
    gains = [0.02, 0.02, 0.021]
    records = _with_controls(hand_made(), gains)
    rows, grid = table1(Grid(records)), Grid(records)
    # hand_made's AnB+ − baseB is 0.01 + 0.002 n + 0.004 s; minus the control's gain per split.
    for row, (lo, hi) in zip(rows, ((1, 7), (3, 7), (5, 7))):
        want = np.mean([np.mean([0.01 + 0.002 * n + 0.004 * s for n in range(lo, hi + 1)]) - gains[s]
                        for s in range(3)])
        assert row["over_equal_training"].mean == pytest.approx(want, abs=1e-12)
        assert row["over_equal_training"].units == 3
    by_name = {f["finding"][:4]: f for f in findings(grid)}
    # BnB+ − baseB-long: 0.001 (s − 1) − gains[s] = −0.021, −0.020, −0.020, a tight CI 2 points off: not ≈ 0.
    assert by_name["(3b)"]["estimate"].mean == pytest.approx(-0.061 / 3)
    assert by_name["(3b)"]["verdict"] == "not reproduced"
    assert by_name["(5b)"]["estimate"].mean == pytest.approx(rows[0]["over_equal_training"].mean)
    md = markdown(records, [], [])
    assert "boost over the equal-training base net (baseB-long)" in md and "(5b) AnB+ ≥ baseB trained as long" in md
    # The rules that turned these numbers into verdicts follow the findings table.
    after = md.split("## Findings of Yosinski et al. (2014), here")[1].split("## Table 1")[0]
    assert 'a "≈" finding (1, 3, 3b) is reproduced when its mean is within 1 point of 0' in after
    # Without controls the findings keep their seven rows and the column reads "not run".
    assert [f["finding"][:3] for f in findings(Grid(hand_made()))] == [f"({i})" for i in range(1, 8)]
    assert table1(Grid(hand_made()))[0]["over_equal_training"] is None


def test_convergence_flags_pair_each_base_with_its_twice_as_long_run():
    gains = [0.001, 0.006, 0.03]
    rows = {r["split_seed"]: r for r in convergence(_with_controls(hand_made(), gains)) if r["treatment"] == "baseB"}
    for s, gain in enumerate(gains):
        # The flag is the validation gain (0.2 point under the test gain) against 0.5 point.
        assert rows[s]["gain"] == pytest.approx(gain - 0.002)
        assert rows[s]["test_gain"] == pytest.approx(gain)
        assert rows[s]["converged"] is (gain - 0.002 < 0.005)
        assert rows[s]["long_epochs"] == 20 and rows[s]["val_top1_last"][-1] == pytest.approx(0.60 + 0.02 * s)
    # baseA has no twice-as-long run: not measured, not assumed.
    base_a = [r for r in convergence(_with_controls(hand_made(), gains)) if r["treatment"] == "baseA"]
    assert len(base_a) == 3 and all(r["converged"] is None and r["gain"] is None and r["test_gain"] is None
                                    for r in base_a)
    md = markdown(_with_controls(hand_made(), gains), [], [])
    table = [line for line in md.splitlines() if line.startswith("| baseB-s2r |")]
    assert table and table[0].endswith("| +2.80 | +3.00 | no |")
    assert [line for line in md.splitlines() if line.startswith("| baseB-s1r |")][0].endswith("| +0.40 | +0.60 | yes |")
    assert "| not measured |" in md


def test_records_of_old_runs_without_last_epochs_still_report():
    records = hand_made()
    assert all("val_top1_last" in r for r in records)  # the fields list names it; old files may lack it
    old = [{k: v for k, v in r.items() if k != "val_top1_last"} for r in records]
    assert "## Convergence of the base nets" in markdown(old, [], [])
    assert json.dumps(convergence(old))


def test_deconvnet_goes_through_batch_norm_blocks():
    from tfxfer.visualize import deconv

    model = build_model(get_arch("cifar8-bn", 0.25), 5, seed=3)
    rng = np.random.default_rng(0)
    for layer in ("conv1", "conv2", "conv3"):  # statistics other than the identity's
        bn = model.get_layer(layer).bn
        bn.moving_mean.assign(rng.normal(0, 0.1, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
        bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape))
    xs = rng.normal(0, 1, (2, 32, 32, 3)).astype("float32")
    for layer in ("conv1", "conv3"):
        out, _ = deconv.forward(model, xs, layer)
        np.testing.assert_allclose(out, keras.Model(model.input, model.get_layer(layer).output)(xs), atol=1e-4)
    # One conv1 activation goes down as its filter times the batch norm's gain, at its switch.
    out, traces = deconv.forward(model, xs, "conv1")
    b, i, j, f = np.unravel_index(int(np.argmax(out.numpy())), out.shape)
    top = deconv.one_activation(out, np.array([i, i], np.int32), np.array([j, j], np.int32), np.array([f, f], np.int32))
    projection = deconv.project(top, traces).numpy()[b]
    bn = model.get_layer("conv1").bn
    gain = float(bn.gamma.numpy()[f] / np.sqrt(bn.moving_variance.numpy()[f] + bn.epsilon))
    kernel = model.get_layer("conv1").conv.kernel.numpy()[..., f]
    peak = np.unravel_index(np.argmax(np.abs(projection).sum(-1)), projection.shape[:2])
    assert np.abs(projection).max() == pytest.approx(float(out[b, i, j, f]) * gain * np.abs(kernel).max(), rel=1e-4)
    assert abs(peak[0] - 2 * i) <= 4 and abs(peak[1] - 2 * j) <= 4
