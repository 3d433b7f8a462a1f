"""The architecture registry, its blocks, and the configs that name them."""
import keras
import numpy as np
import pytest

from tfxfer.config import list_configs, load_config
from tfxfer.errors import UserError
from tfxfer.models import LAYER_NAMES, build_model, get_arch, list_archs
from tfxfer.models.blocks import FilterRenorm


def test_registry_lists_and_rejects():
    assert list_archs() == ["caffenet", "cifar8", "cifar8-bn", "zfnet"]
    assert list_archs("*net") == ["caffenet", "zfnet"]
    with pytest.raises(UserError, match="arch 'vgg' is unknown; allowed: caffenet, cifar8, cifar8-bn, zfnet"):
        get_arch("vgg")


@pytest.mark.parametrize("arch,maps", [
    ("caffenet", [27, 13, 13, 13, 6]),  # Krizhevsky et al.: 55 → pool 27, 27 → pool 13, …, pool 6
    ("zfnet", [55, 13, 13, 13, 6]),  # Zeiler & Fergus Fig. 3: 110 → pool 55, 26 → pool 13, …, pool 6
    ("cifar8", [16, 8, 8, 8, 4]),
    ("cifar8-bn", [16, 8, 8, 8, 4]),
])
def test_eight_named_layers_and_feature_map_sizes(arch, maps):
    model = build_model(get_arch(arch, width=0.05), 7)
    assert [layer.name for layer in model.layers[1:]] == list(LAYER_NAMES)
    assert [model.get_layer(f"conv{i}").output.shape[1] for i in range(1, 6)] == maps
    assert model.output_shape == (None, 7)


def test_model_config_round_trips():
    model = build_model(get_arch("caffenet", 0.05), 3, renorm_radius=0.1, weight_decay=5e-4)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 227, 227, 3)).astype("float32")
    np.testing.assert_allclose(model(x), clone(x), rtol=1e-5, atol=1e-5)


def test_filter_renorm_rescales_only_filters_above_the_radius():
    w = np.zeros((3, 3, 3, 2), np.float32)
    w[..., 0] = 0.5  # RMS 0.5 > 0.1: rescaled to RMS 0.1
    w[..., 1] = 0.05  # RMS 0.05: kept
    out = keras.ops.convert_to_numpy(FilterRenorm(0.1)(keras.ops.convert_to_tensor(w)))
    rms = np.sqrt(np.mean(out ** 2, axis=(0, 1, 2)))
    np.testing.assert_allclose(rms, [0.1, 0.05], rtol=1e-5)
    np.testing.assert_allclose(out[..., 1], w[..., 1])


def test_same_seed_same_init_other_seed_other_init():
    spec = get_arch("cifar8", 0.25)
    a, b, c = (build_model(spec, 5, seed=s).get_weights() for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("name", ["quickstart", "cifar10", "cifar10_dissimilar", "cifar100", "imagenet_paper"])
def test_bundled_configs_load_and_validate(name):
    assert name in list_configs()
    cfg = load_config(name)
    get_arch(cfg.arch.name, cfg.arch.width)
    assert cfg.recipe.momentum == 0.9 and cfg.seed == 0
