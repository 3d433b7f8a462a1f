"""Treatments: which layers are copied, re-initialized, frozen and fine-tuned (paper Fig. 1)."""
import numpy as np
import pytest

from conftest import tiny_config
from tfxfer.errors import UserError
from tfxfer.experiments.runner import run
from tfxfer.models import LAYER_NAMES, build_model, get_arch
from tfxfer.runs.finished import load_run
from tfxfer.runs.spec import RunSpec
from tfxfer.treatments import TREATMENTS, build_treatment, get_treatment

SPEC = get_arch("cifar8", 0.25)


def weights(model, layer):
    return model.get_layer(layer).get_weights()


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_names_and_sources():
    assert set(TREATMENTS) == {"baseA", "baseB", "AnB", "AnB+", "BnB", "BnB+", "BnA", "BnA+", "AnA", "AnA+", "random",
                               "baseA-long", "baseB-long"}
    assert get_treatment("baseB-long").is_base and get_treatment("baseB-long").epochs_factor == 2
    assert get_treatment("AnB+").control == "baseB-long" and get_treatment("AnB").control is None
    assert get_treatment("AnB").base_treatment == "baseA" and get_treatment("AnB").target == "B"
    assert get_treatment("BnA+").base_treatment == "baseB" and get_treatment("BnA+").fine_tune
    assert get_treatment("random").base_treatment is None and get_treatment("random").target == "B"


@pytest.mark.parametrize("name,n,msg", [("CnB", 3, "allowed: baseA"), ("BnB", 8, "allowed: 1..7"),
                                        ("AnB", 0, "allowed: 1..7"), ("BnB", None, "allowed: 1..7")])
def test_bad_treatment_or_n(name, n, msg):
    with pytest.raises(UserError, match=msg):
        build_treatment(name, n, SPEC, 5, base=build_model(SPEC, 5))


@pytest.mark.parametrize("name", ["BnB", "AnB", "BnB+", "random"])
def test_build_copies_first_n_and_reinitializes_the_rest(name):
    base = build_model(SPEC, 5, seed=7)
    n = 3
    model = build_treatment(name, n, SPEC, 5, base=base, seed=7)
    fresh = build_treatment(name, n, SPEC, 5, base=base, seed=7)
    copies = name != "random"
    for i, layer in enumerate(LAYER_NAMES):
        is_copied = copies and i < n
        assert same(weights(model, layer), weights(base, layer)) == is_copied, layer
        # The same seed re-initializes the same way: reproducible from a seed.
        assert same(weights(model, layer), weights(fresh, layer)), layer
        frozen = i < n and not name.endswith("+")
        assert model.get_layer(layer).trainable == (not frozen), layer


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """baseA, baseB and four treatments at n = 3, trained briefly on tiny synthetic data."""
    tmp = tmp_path_factory.mktemp("grid")
    cfg = tiny_config(tmp)
    records = {t: run(RunSpec(t, 3, cfg), verbose=False) for t in ("BnB", "AnB", "BnB+", "random")}
    for t in ("baseA", "baseB"):
        records[t] = run(RunSpec(t, 0, cfg), verbose=False)  # finished already: read back
    return {t: (r, load_run(tmp / "runs" / r["run_id"]).model) for t, r in records.items()}


def test_frozen_layers_hold_the_base_weights_after_training(grid):
    for name, base in (("BnB", "baseB"), ("AnB", "baseA")):
        record, model = grid[name]
        _, base_model = grid[base]
        assert record["base_run_id"] == grid[base][0]["run_id"]
        for layer in LAYER_NAMES[:3]:
            assert same(weights(model, layer), weights(base_model, layer)), (name, layer)
        for layer in LAYER_NAMES[3:7]:
            assert not same(weights(model, layer), weights(base_model, layer)), (name, layer)


def test_fine_tuned_copied_layers_change(grid):
    _, model = grid["BnB+"]
    _, base = grid["baseB"]
    for layer in LAYER_NAMES[:3]:
        diff = max(np.max(np.abs(a - b)) for a, b in zip(weights(model, layer), weights(base, layer)))
        assert diff > 1e-6, layer


def test_random_layers_are_frozen_and_not_the_base(grid):
    _, model = grid["random"]
    _, base = grid["baseB"]
    untrained = build_treatment("random", 3, SPEC, model.output_shape[-1], seed=0)
    for layer in LAYER_NAMES[:3]:
        assert same(weights(model, layer), weights(untrained, layer)), layer  # frozen at its seeded init
        assert not same(weights(model, layer), weights(base, layer)), layer


def test_records_name_the_split_and_task(grid):
    a, b = grid["baseA"][0], grid["baseB"][0]
    assert a["split_hash"] == b["split_hash"] and a["split"] == "random" and a["split_seed"] == 0
    assert not set(a["classes"]) & set(b["classes"])
    assert len(a["classes"]) + len(b["classes"]) == 24
    assert grid["AnB"][0]["classes"] == b["classes"]
