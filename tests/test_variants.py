"""Table 3 architecture variants: their layers and widths, from-scratch training only, the planner,
the honest train top-1, and the report's Table 3 from hand-made records."""
import json
import math

import keras
import numpy as np
import pytest
from conftest import tiny_config
from test_report import T_975_DF2, hand_made

from tfxfer.cli import main
from tfxfer.config import Config, dump_config, load_config
from tfxfer.data.tasks import load_data, task_data
from tfxfer.diagnose.filters import analyze_kernel
from tfxfer.errors import UserError
from tfxfer.experiments.grid import run_grid
from tfxfer.experiments.planner import plan_experiment
from tfxfer.models import LAYER_NAMES, VARIANTS, build_model, get_arch
from tfxfer.report import write_report
from tfxfer.report.analysis import Grid, findings
from tfxfer.runs.finished import load_run
from tfxfer.runs.records import RESULT_FIELDS
from tfxfer.runs.spec import RunSpec
from tfxfer.training.loop import evaluate, inference

LAYERS = {  # the blocks each variant keeps
    "no-conv3-4": ("conv1", "conv2", "conv5", "fc6", "fc7", "fc8"),
    "no-fc7": ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8"),
    "no-fc6-7": ("conv1", "conv2", "conv3", "conv4", "conv5", "fc8"),
    "no-conv3-4-fc6-7": ("conv1", "conv2", "conv5", "fc8"),
    "fc6-7-half": LAYER_NAMES, "fc6-7-double": LAYER_NAMES, "conv3-5-double": LAYER_NAMES,
    "conv1-7x7-s2": LAYER_NAMES,
}


def widths(model) -> dict[str, int]:
    return {layer.name: layer.conv.filters if hasattr(layer, "conv") else layer.dense.units
            for layer in model.layers[1:]}


def test_every_variant_has_its_layers_and_widths_and_learns():
    assert set(VARIANTS) == set(LAYERS)
    full = widths(build_model(get_arch("cifar8", 0.5), 3))
    assert full == {"conv1": 16, "conv2": 32, "conv3": 48, "conv4": 48, "conv5": 32, "fc6": 128, "fc7": 128, "fc8": 3}
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    for name, layers in LAYERS.items():
        spec = get_arch("cifar8", 0.5, name)
        assert spec.variant == name and spec.layers == layers
        model = build_model(spec, 3)
        got = widths(model)
        assert tuple(got) == layers, name
        scale = {"fc6-7-half": {"fc6": 0.5, "fc7": 0.5}, "fc6-7-double": {"fc6": 2, "fc7": 2},
                 "conv3-5-double": {"conv3": 2, "conv4": 2, "conv5": 2}}.get(name, {})
        assert got == {n: int(full[n] * scale.get(n, 1)) for n in layers}, name
        conv1 = model.get_layer("conv1").conv
        assert (conv1.kernel_size, conv1.strides) == (((7, 7), (2, 2)) if name == "conv1-7x7-s2" else ((5, 5), (1, 1)))
        model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = [w.copy() for w in model.get_weights()]
        loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
        assert np.isfinite(loss) and all((a != b).any() for a, b in zip(before, model.get_weights())), name


def test_variant_is_validated_and_round_trips_in_the_config(tmp_path):
    cfg = tiny_config(tmp_path, arch={"variant": "no-fc7"})
    assert Config.from_dict(cfg.to_dict()).arch.variant == "no-fc7"
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    assert load_config(str(tmp_path / "c.yaml")).arch.variant == "no-fc7"
    with pytest.raises(UserError, match="config key arch.variant: 'no-fc9' is not allowed; expected null or one of "
                                        "no-conv3-4, no-fc7"):
        tiny_config(tmp_path, arch={"variant": "no-fc9"})
    with pytest.raises(UserError, match="config key experiment.variants: 'wide' is not allowed"):
        tiny_config(tmp_path, experiment={"variants": ["no-fc7", "wide"]})
    with pytest.raises(UserError, match="arch variant 'wide' is unknown; allowed: no-conv3-4"):
        get_arch("cifar8", 1.0, "wide")


def test_unset_variant_keeps_existing_run_ids(tmp_path):
    cfg = tiny_config(tmp_path)
    ident = RunSpec("baseB", 0, cfg).run_id
    assert RunSpec("baseB", 0, tiny_config(tmp_path, arch={"variant": "no-fc7"})).run_id != ident
    # The id of a config written before variants existed (no arch.variant key) is unchanged.
    old = cfg.to_dict()
    del old["arch"]["variant"]
    assert RunSpec("baseB", 0, Config.from_dict(old)).run_id == ident


def test_a_transfer_treatment_of_a_variant_is_refused(tmp_path, capsys):
    cfg = tiny_config(tmp_path, arch={"variant": "no-conv3-4"})
    with pytest.raises(UserError, match="layer n is undefined for variants"):
        RunSpec("AnB", 3, cfg)
    RunSpec("baseA", None, cfg)  # from scratch is fine
    with pytest.raises(SystemExit) as exc:
        main(["train", "--treatment", "BnB+", "--n", "2", "--variant", "no-fc7", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "treatment BnB+ (n=2) is not allowed with arch variant 'no-fc7': layer n is undefined" in err
    assert not (tmp_path / "runs").exists()


def test_planner_plans_each_variant_and_the_reference_per_seed(tmp_path):
    cfg = tiny_config(tmp_path, experiment={"treatments": [], "variants": ["no-fc7", "fc6-7-half"], "seeds": [0, 1]})
    plan = plan_experiment(cfg)
    got = sorted((r.treatment, r.config.arch.variant or "", r.config.seed) for r in plan.runs)
    assert got == sorted(("baseB", v, s) for v in ("", "no-fc7", "fc6-7-half") for s in (0, 1))
    assert len({r.run_id for r in plan.runs}) == 6
    # With a grid, the reference is the grid's own baseB (one run, not two).
    cfg = tiny_config(tmp_path, experiment={"treatments": ["BnB"], "n": [1], "variants": ["no-fc7"]})
    assert sorted((r.treatment, r.config.arch.variant or "") for r in plan_experiment(cfg).runs) == \
        [("BnB", ""), ("baseB", ""), ("baseB", "no-fc7")]


def test_variants_train_and_record_an_honest_train_top1(tmp_path):
    cfg = tiny_config(tmp_path, dataset={"train_per_class": 20, "test_per_class": 5}, recipe={"epochs": 1},
                      experiment={"treatments": [], "variants": ["no-conv3-4-fc6-7"]})
    plan = plan_experiment(cfg)
    assert run_grid(plan, tmp_path / "runs") == 2
    for spec in plan.runs:
        finished = load_run(tmp_path / "runs" / spec.run_id)
        assert tuple(layer.name for layer in finished.model.layers[1:]) == finished.spec.layers
        assert finished.spec.variant == spec.config.arch.variant
        # train_top1 is the top-1 on the training images as evaluation sees them (no augmentation).
        data, split, _ = load_data(spec.config)
        task = task_data(spec.config, data, split, finished.spec, task="B")
        measured = evaluate(inference(finished.model), task.train_x, task.train_y, task)["top1"]
        assert finished.record["train_top1"] == measured
    assert sorted(load_run(tmp_path / "runs" / r.run_id).spec.layers for r in plan.runs) == \
        [LAYER_NAMES, ("conv1", "conv2", "conv5", "fc8")]

    # The report: Table 3 with both networks, and the conv1 health of both base nets (norm test).
    write_report(tmp_path / "runs")
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "| cifar8 | — | as registered | 0 |" in md and "| cifar8 | no-conv3-4-fc6-7 | removed layers 3, 4, 6, 7 |" in md
    for spec in plan.runs:
        kernel = load_run(tmp_path / "runs" / spec.run_id).model.get_layer("conv1").get_weights()[0]
        s = analyze_kernel(kernel).summary()
        arch = " ".join(filter(None, ("cifar8", spec.config.arch.variant)))  # a variant is named beside its arch
        assert (f"| {spec.run_id} | {arch} | 8 (5x5) | {s['dead']} | {s['dominant_low']}/{s['dominant_mid']}/"
                f"{s['dominant_high']} | {s['mean_mid_share']:.3f} | {s['above_radius']} (radius 0.1) |") in md


def variant_record(variant, seed, train, top1, top5):
    r = {f: None for f in RESULT_FIELDS}
    r.update(run_id=f"baseB-{variant}-{seed}", treatment="baseB", n=0, split="random", split_seed=0, split_hash="h0",
             classes=["x", "y"], seed=seed, top1=top1, top5=top5, train_top1=train, dataset="synthetic",
             arch="cifar8", config={"arch": {"name": "cifar8", "variant": variant}})
    return r


def test_report_has_table3_with_means_and_cis_over_seeds(tmp_path):
    grid = hand_made()
    variants = [variant_record("no-fc7", s, t, a, b) for s, (t, a, b) in
                enumerate([(0.9, 0.5, 0.9), (0.8, 0.6, 0.95), (0.85, 0.7, 1.0)])]
    variants.append(variant_record("conv3-5-double", 0, 0.99, 0.4, 0.8))
    # A variant's baseB does not stand in for the grid's baseB.
    assert [f["estimate"] for f in findings(Grid(grid + variants))] == [f["estimate"] for f in findings(Grid(grid))]
    for r in grid + variants:
        (tmp_path / r["run_id"]).mkdir()
        (tmp_path / r["run_id"] / "result.json").write_text(json.dumps(r))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| cifar8 |")]

    def ci(values):
        v = np.array(values)
        return f"{100 * v.mean():.1f} ± {100 * T_975_DF2 * v.std(ddof=1) / math.sqrt(3):.1f}"

    # The reference row: the grid's three baseB runs (seed 0 of three splits), no train top-1 recorded.
    assert rows[0] == f"| cifar8 | — | as registered | 0 | — | {ci([0.60, 0.62, 0.64])} | 100.0 ± 0.0 |"
    assert rows[1] == (f"| cifar8 | no-fc7 | removed layer 7 | 0, 1, 2 | {ci([0.9, 0.8, 0.85])} | "
                       f"{ci([0.5, 0.6, 0.7])} | {ci([0.9, 0.95, 1.0])} |")
    assert rows[2] == "| cifar8 | conv3-5-double | layers 3, 4, 5 at double width | 0 | 99.0 (1 seed) | " \
                      "40.0 (1 seed) | 80.0 (1 seed) |"
    assert len(rows) == 3
    assert "train_top1" in (tmp_path / "results.csv").read_text().splitlines()[0]
