"""Each norm against its formula, the registry's contract, and BN's per-run statistics under vmap."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normbench.config import ConfigError, NormConfig
from normbench.norms import NORMS, WHOLE_BATCH, check_norm, get_norm

VALID = ", ".join(NORMS)  # the error lists every registered norm

CFG = NormConfig(momentum=0.9, epsilon=1e-6)


def apply(name, x, config=CFG, train=True, variables=None):
    module = NORMS[name].make(config, WHOLE_BATCH)(train)
    variables = variables or module.init(jax.random.PRNGKey(0), x)
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    return np.asarray(y), variables, updates


def rand(*shape, seed=0, loc=3.0, scale=2.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, scale, shape), jnp.float32)


def test_batch_train_mode_is_the_textbook_formula_and_updates_running_averages():
    x = rand(32, 5)
    y, variables, updates = apply("batch", x)
    xn = np.asarray(x, np.float64)
    mu, var = xn.mean(0), ((xn - xn.mean(0)) ** 2).mean(0)  # biased variance
    np.testing.assert_allclose(y, (xn - mu) / np.sqrt(var + 1e-6), rtol=1e-5, atol=1e-5)
    stats = updates["batch_stats"]
    # Running averages start at mean 0, var 1: running = 0.9 running + 0.1 batch.
    np.testing.assert_allclose(stats["mean"], 0.1 * mu, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-5)


def test_batch_eval_mode_uses_the_running_statistics():
    x = rand(6, 4)
    mean, var = np.array([1.0, -2.0, 0.5, 3.0]), np.array([4.0, 0.25, 1.0, 9.0])
    module = NORMS["batch"].make(CFG, WHOLE_BATCH)(False)
    variables = module.init(jax.random.PRNGKey(0), x)
    variables = {**variables, "batch_stats": {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}}
    y = module.apply(variables, x)
    np.testing.assert_allclose(y, (np.asarray(x) - mean) / np.sqrt(var + 1e-6), rtol=1e-5, atol=1e-6)


def test_batch_over_conv_features_reduces_over_batch_and_space():
    x = rand(4, 3, 3, 2)
    y, _, _ = apply("batch", x)
    xn = np.asarray(x, np.float64)
    mu, var = xn.mean((0, 1, 2)), xn.var((0, 1, 2))
    np.testing.assert_allclose(y, (xn - mu) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-5)


def test_layer_normalizes_each_example_over_all_its_axes():
    for shape, axes in (((5, 7), (1,)), ((3, 2, 2, 4), (1, 2, 3))):
        x = rand(*shape)
        y, _, _ = apply("layer", x)
        xn = np.asarray(x, np.float64)
        mu, var = xn.mean(axes, keepdims=True), xn.var(axes, keepdims=True)
        np.testing.assert_allclose(y, (xn - mu) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", [NormConfig(num_groups=2), NormConfig(group_size=3)])
def test_group_normalizes_each_group_of_channels(config):
    x = rand(3, 2, 2, 6)
    y, _, _ = apply("group", x, config)
    g = np.asarray(x, np.float64).reshape(3, 2, 2, 2, 3)  # 2 groups of 3 channels
    mu, var = g.mean((1, 2, 4), keepdims=True), g.var((1, 2, 4), keepdims=True)
    expected = ((g - mu) / np.sqrt(var + config.epsilon)).reshape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_none_is_identity_without_variables():
    x = rand(4, 3)
    y, variables, _ = apply("none", x)
    np.testing.assert_array_equal(y, x)
    assert not jax.tree.leaves(variables)


def test_batch_under_vmap_reduces_over_each_runs_own_examples_only():
    runs = jnp.stack([rand(8, 3, seed=0, loc=0.0), rand(8, 3, seed=1, loc=10.0, scale=5.0)])
    module = NORMS["batch"].make(CFG, WHOLE_BATCH)(True)
    variables = module.init(jax.random.PRNGKey(0), runs[0])

    def one(x):
        return module.apply(variables, x, mutable=["batch_stats"])

    y, updates = jax.vmap(one)(runs)
    for r in range(2):
        y_r, updates_r = one(runs[r])
        np.testing.assert_allclose(y[r], y_r, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(updates["batch_stats"]["mean"][r], updates_r["batch_stats"]["mean"], rtol=1e-6)
    pooled, _ = one(runs.reshape(16, 3))
    assert not np.allclose(y.reshape(16, 3), pooled, atol=1e-2)


def test_unknown_norm_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=re.escape(f"unknown norm 'batchnorm'; valid norms: {VALID}")):
        get_norm("batchnorm")


@pytest.mark.parametrize(
    "config, message",
    [
        (NormConfig(), "32 groups do not divide a layer of 100 channels"),
        (NormConfig(num_groups=3), "3 groups do not divide a layer of 100 channels"),
        (NormConfig(group_size=7), "group_size=7 does not divide a layer of 100 channels"),
        (NormConfig(num_groups=4, group_size=25), "not both"),
    ],
)
def test_group_options_are_checked_against_the_channels(config, message):
    with pytest.raises(ConfigError, match=message):
        check_norm("group", config, (100, 100))
    check_norm("group", NormConfig(num_groups=4), (100, 100))


@pytest.mark.parametrize("shape", [(5, 6), (3, 2, 2, 6)])
def test_group_norm_with_one_group_is_layer_norm(shape):
    x = rand(*shape)
    y_group, _, _ = apply("group", x, NormConfig(num_groups=1, epsilon=1e-6))
    y_layer, _, _ = apply("layer", x)
    np.testing.assert_allclose(y_group, y_layer, rtol=1e-5, atol=1e-6)
