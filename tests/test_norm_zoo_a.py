"""Instance, RMS, ghost-batch and batch-renorm norms against their papers' formulas, computed in float64."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normbench.config import ConfigError, NormConfig
from normbench.norms import WHOLE_BATCH, BatchStats, batch_renorm, ghost_batch, instance, rms
from normbench.norms.batch_renorm import renorm_limits

CFG = NormConfig(momentum=0.9, epsilon=1e-6)
EPS = CFG.epsilon


def rand(*shape, seed=0, loc=2.0, scale=3.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, scale, shape), jnp.float32)


def f64(x):
    return np.asarray(x, np.float64)


def run(module, x, variables=None, **kwargs):
    variables = variables or module.init(jax.random.PRNGKey(0), x)
    y, updates = module.apply(variables, x, mutable=["batch_stats"], **kwargs)
    return np.asarray(y), variables, updates


def with_params(variables, **params):
    return {**variables, "params": {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}}


def flax_bn(train, config=CFG):
    return nn.BatchNorm(
        use_running_average=not train, momentum=config.momentum, epsilon=config.epsilon, use_fast_variance=False
    )


# instance


def test_instance_normalizes_each_example_and_channel_over_space_with_affine():
    x = rand(3, 4, 5, 2)
    module = instance.SPEC.make(CFG, WHOLE_BATCH)(True)
    variables = with_params(module.init(jax.random.PRNGKey(0), x), scale=[2.0, -0.5], bias=[1.0, 3.0])
    y, _, _ = run(module, x, variables)
    xn = f64(x)
    mu, var = xn.mean((1, 2), keepdims=True), xn.var((1, 2), keepdims=True)
    expected = (xn - mu) / np.sqrt(var + EPS) * np.array([2.0, -0.5]) + np.array([1.0, 3.0])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_instance_is_group_norm_with_one_channel_per_group():
    from normbench.norms import group

    x = rand(2, 3, 3, 4)
    y, _, _ = run(instance.SPEC.make(CFG, WHOLE_BATCH)(True), x)
    y_group, _, _ = run(group.SPEC.make(NormConfig(epsilon=EPS, group_size=1), WHOLE_BATCH)(True), x)
    np.testing.assert_array_equal(y, y_group)


def test_instance_on_features_without_space_outputs_beta():
    x = rand(4, 3)
    module = instance.SPEC.make(CFG, WHOLE_BATCH)(True)
    variables = with_params(module.init(jax.random.PRNGKey(0), x), scale=[2.0, 2.0, 2.0], bias=[1.0, -1.0, 0.5])
    y, _, _ = run(module, x, variables)
    np.testing.assert_allclose(y, np.broadcast_to([1.0, -1.0, 0.5], (4, 3)), atol=1e-6)


def test_instance_metadata():
    spec = instance.SPEC
    assert (spec.name, spec.batch_dependent, spec.running_stats, spec.scale_invariant) == (
        "instance",
        False,
        False,
        True,
    )


# rms


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 3, 3)])
def test_rms_divides_by_the_root_mean_square_over_all_non_batch_axes(shape):
    x = rand(*shape)
    module = rms.SPEC.make(CFG, WHOLE_BATCH)(True)
    gamma = np.array([0.5, 2.0, -1.0])
    variables = with_params(module.init(jax.random.PRNGKey(0), x), scale=gamma)
    y, _, updates = run(module, x, variables)
    xn = f64(x)
    axes = tuple(range(1, xn.ndim))
    expected = gamma * xn / np.sqrt((xn**2).mean(axes, keepdims=True) + EPS)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert set(variables["params"]) == {"scale"} and not updates  # no beta, no running statistics


def test_rms_does_not_center():
    x = jnp.full((2, 4), 3.0)
    y, _, _ = run(rms.SPEC.make(CFG, WHOLE_BATCH)(True), x)
    np.testing.assert_allclose(y, 3.0 / np.sqrt(9.0 + EPS), rtol=1e-6)


# ghost_batch


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 3, 4)])
@pytest.mark.parametrize("ghost_size", [None, "batch"])
def test_ghost_batch_over_the_whole_batch_is_batch_norm(shape, ghost_size):
    config = dataclasses.replace(CFG, ghost_size=shape[0] if ghost_size == "batch" else None)
    x = rand(*shape)
    y_bn, _, stats_bn = run(flax_bn(True), x)
    y, _, stats = run(ghost_batch.SPEC.make(config, WHOLE_BATCH)(True), x)
    np.testing.assert_allclose(y, y_bn, rtol=1e-5, atol=1e-5)
    for key in ("mean", "var"):
        np.testing.assert_allclose(stats["batch_stats"][key], stats_bn["batch_stats"][key], rtol=1e-5)


def test_ghost_batch_normalizes_each_group_and_averages_group_statistics():
    x = rand(6, 2, 2, 3)
    y, variables, stats = run(ghost_batch.SPEC.make(dataclasses.replace(CFG, ghost_size=2), WHOLE_BATCH)(True), x)
    groups = f64(x).reshape(3, 2, 2, 2, 3)
    mu, var = groups.mean((1, 2, 3), keepdims=True), groups.var((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, ((groups - mu) / np.sqrt(var + EPS)).reshape(x.shape), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["batch_stats"]["mean"], 0.1 * mu.mean((0, 1, 2, 3)).ravel(), rtol=1e-5)
    np.testing.assert_allclose(stats["batch_stats"]["var"], 0.9 + 0.1 * var.mean((0, 1, 2, 3)).ravel(), rtol=1e-5)
    # Eval mode: the running averages.
    y_eval, _, _ = run(ghost_batch.SPEC.make(CFG, WHOLE_BATCH)(False), x, {**variables, **stats})
    expected = (f64(x) - f64(stats["batch_stats"]["mean"])) / np.sqrt(f64(stats["batch_stats"]["var"]) + EPS)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)


def test_ghost_batch_options_are_checked():
    with pytest.raises(ConfigError, match="ghost_size must be at least 1"):
        ghost_batch.SPEC.check(dataclasses.replace(CFG, ghost_size=0), 8)
    ghost_batch.SPEC.check(dataclasses.replace(CFG, ghost_size=3), 8)
    ghost_batch.SPEC.check(CFG, 8)
    with pytest.raises(ValueError, match="group size of 3 does not divide the batch of 8"):
        run(ghost_batch.SPEC.make(dataclasses.replace(CFG, ghost_size=3), WHOLE_BATCH)(True), rand(8, 2))


def test_ghost_batch_takes_a_traced_group_size_over_its_configured_one():
    x = rand(8, 3)
    y_static, _, _ = run(ghost_batch.SPEC.make(dataclasses.replace(CFG, ghost_size=4), WHOLE_BATCH)(True), x)
    configured = dataclasses.replace(CFG, ghost_size=2)
    module = ghost_batch.SPEC.make(configured, BatchStats(group_size=jnp.int32(8)))(True)
    variables = module.init(jax.random.PRNGKey(0), x)
    ys = jax.vmap(
        lambda g: ghost_batch.SPEC.make(configured, BatchStats(group_size=g))(True).apply(
            variables, x, mutable=["batch_stats"]
        )[0]
    )(jnp.array([4, 8], jnp.int32))
    np.testing.assert_allclose(ys[0], y_static, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ys[1], run(flax_bn(True), x)[0], rtol=1e-5, atol=1e-5)


# batch_renorm

# 8 train steps: held for 2, r_max ramped over the next 4, d_max over the next 2.
RENORM = NormConfig(
    momentum=0.9,
    epsilon=1e-6,
    renorm_r_max=3.0,
    renorm_d_max=5.0,
    renorm_hold_fraction=0.25,
    renorm_r_ramp_fraction=0.5,
    renorm_d_ramp_fraction=0.25,
    renorm_train_steps=8,
)


def test_renorm_limits_hold_then_ramp_r_and_d_separately_in_fractions_of_the_run():
    expected = {
        0: (1.0, 0.0),
        2: (1.0, 0.0),
        3: (1.5, 2.5),
        4: (2.0, 5.0),
        5: (2.5, 5.0),
        6: (3.0, 5.0),
        50: (3.0, 5.0),
    }
    for step, limits in expected.items():
        np.testing.assert_allclose(renorm_limits(step, RENORM), limits, rtol=1e-6, err_msg=f"step {step}")
    # The same fractions of a run 10 times as long: the same shape, 10 times as many steps.
    longer = dataclasses.replace(RENORM, renorm_train_steps=80)
    for step, limits in expected.items():
        np.testing.assert_allclose(renorm_limits(10 * step, longer), limits, rtol=1e-6, err_msg=f"step {10 * step}")
    no_ramp = dataclasses.replace(RENORM, renorm_r_ramp_fraction=0.0, renorm_d_ramp_fraction=0.0)
    np.testing.assert_allclose(renorm_limits(1, no_ramp), (1.0, 0.0))
    np.testing.assert_allclose(renorm_limits(2, no_ramp), (3.0, 5.0))


def test_renorm_default_schedule_is_the_papers_over_160k_steps():
    paper = dataclasses.replace(NormConfig(), renorm_train_steps=160_000)
    for step, limits in {5_000: (1.0, 0.0), 25_000: (1 + 2 * 20 / 35, 5.0), 40_000: (3.0, 5.0)}.items():
        np.testing.assert_allclose(renorm_limits(step, paper), limits, rtol=1e-6, err_msg=f"step {step}")


def test_renorm_without_its_run_length_says_so():
    with pytest.raises(ConfigError, match="norm.renorm_train_steps is not set"):
        run(batch_renorm.SPEC.make(CFG, WHOLE_BATCH)(True), rand(4, 3))


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 3, 4)])
def test_batch_renorm_during_the_hold_is_batch_norm_with_a_running_sigma(shape):
    config = dataclasses.replace(RENORM, renorm_hold_fraction=0.5)
    module, bn = batch_renorm.SPEC.make(config, WHOLE_BATCH)(True), flax_bn(True, config)
    x0 = rand(*shape)
    variables = module.init(jax.random.PRNGKey(0), x0)
    assert int(variables["batch_stats"]["steps"]) == 0  # init is not a train step
    np.testing.assert_allclose(variables["batch_stats"]["sigma"], np.sqrt(1.0 + EPS), rtol=1e-7)
    bn_variables = bn.init(jax.random.PRNGKey(0), x0)
    sigma = np.sqrt(1.0 + EPS)
    for step in range(3):
        x = rand(*shape, seed=step, loc=step - 1.0, scale=1.0 + step)
        y, updates = module.apply(variables, x, mutable=["batch_stats"])
        y_bn, updates_bn = bn.apply(bn_variables, x, mutable=["batch_stats"])
        np.testing.assert_allclose(y, y_bn, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(updates["batch_stats"]["mean"], updates_bn["batch_stats"]["mean"], rtol=1e-6)
        # The paper's running sigma: the average of sigma_B = sqrt(var_B + eps), not the root of the average var.
        sigma = 0.9 * sigma + 0.1 * np.sqrt(f64(x).var(tuple(range(len(shape) - 1))) + EPS)
        np.testing.assert_allclose(updates["batch_stats"]["sigma"], sigma, rtol=1e-6)
        assert int(updates["batch_stats"]["steps"]) == step + 1
        variables, bn_variables = {**variables, **updates}, {**bn_variables, **updates_bn}
    assert not np.allclose(sigma, np.sqrt(f64(bn_variables["batch_stats"]["var"]) + EPS), rtol=1e-3)
    y_eval = batch_renorm.SPEC.make(config, WHOLE_BATCH)(False).apply(variables, x)
    np.testing.assert_allclose(y_eval, (f64(x) - f64(variables["batch_stats"]["mean"])) / sigma, rtol=1e-5, atol=1e-5)


def test_batch_renorm_running_sigma_is_the_mean_of_each_ghost_groups_sigma():
    x = rand(6, 2, 2, 3)
    config = dataclasses.replace(RENORM, running_var_init=0.0, unbiased_running_var=True)
    variables = batch_renorm.SPEC.make(config, WHOLE_BATCH)(True).init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(variables["batch_stats"]["sigma"], np.sqrt(EPS), rtol=1e-6)
    _, _, updates = run(batch_renorm.SPEC.make(config, BatchStats(group_size=3))(True), x, variables)
    groups = f64(x).reshape(2, 12, 3)  # 2 groups of 3 examples x 4 positions
    sigmas = np.sqrt(groups.var(1, ddof=1) + EPS)  # unbiased, as configured
    np.testing.assert_allclose(updates["batch_stats"]["sigma"], 0.9 * np.sqrt(EPS) + 0.1 * sigmas.mean(0), rtol=1e-6)


def renorm_reference(x, running_mean, running_sigma, r_max, d_max, gamma, beta):
    xn = f64(x)
    axes = tuple(range(xn.ndim - 1))
    mu_b, var_b = xn.mean(axes), xn.var(axes)
    sigma_b = np.sqrt(var_b + EPS)
    r = np.clip(sigma_b / running_sigma, 1 / r_max, r_max)
    d = np.clip((mu_b - running_mean) / running_sigma, -d_max, d_max)
    return ((xn - mu_b) / sigma_b * r + d) * gamma + beta, mu_b, sigma_b, r, d


def renorm_stats(mean, sigma, steps):
    return {
        "mean": jnp.asarray(mean, jnp.float32),
        "sigma": jnp.asarray(sigma, jnp.float32),
        "steps": jnp.float32(steps),
    }


def test_batch_renorm_after_the_ramp_clips_r_and_d():
    x = rand(12, 2, 2, 4)  # batch mean ~2, std ~3 per channel
    module = batch_renorm.SPEC.make(RENORM, WHOLE_BATCH)(True)
    variables = module.init(jax.random.PRNGKey(0), x)
    # Channel 0: r, d inside the limits; 1: r clipped to 3; 2: r clipped to 1/3, d to -5; 3: d clipped to +5.
    running_mean = np.array([1.0, 2.0, 200.0, -30.0])
    running_sigma = np.array([2.0, 0.5, 20.0, 4.0])
    gamma, beta = np.array([1.5, 1.0, -2.0, 0.5]), np.array([0.0, 1.0, 2.0, -1.0])
    variables = {
        "params": {"scale": jnp.asarray(gamma, jnp.float32), "bias": jnp.asarray(beta, jnp.float32)},
        "batch_stats": renorm_stats(running_mean, running_sigma, 100),
    }
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    expected, mu_b, sigma_b, r, d = renorm_reference(x, running_mean, running_sigma, 3.0, 5.0, gamma, beta)
    assert r[1] == 3.0 and r[2] == pytest.approx(1 / 3) and d[2] == -5.0 and d[3] == 5.0
    assert 1 / 3 < r[0] < 3 and -5 < d[0] < 5
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.9 * running_mean + 0.1 * mu_b, rtol=1e-5)
    np.testing.assert_allclose(stats["sigma"], 0.9 * running_sigma + 0.1 * sigma_b, rtol=1e-5)
    assert int(stats["steps"]) == 101
    # Eval mode: the running mean and sigma.
    y_eval = batch_renorm.SPEC.make(RENORM, WHOLE_BATCH)(False).apply({**variables, **updates}, x)
    expected_eval = (f64(x) - f64(stats["mean"])) / f64(stats["sigma"]) * gamma + beta
    np.testing.assert_allclose(y_eval, expected_eval, rtol=1e-5, atol=1e-5)


def test_batch_renorm_mid_ramp_uses_the_scheduled_limits():
    x = rand(10, 3)
    module = batch_renorm.SPEC.make(RENORM, WHOLE_BATCH)(True)
    variables = module.init(jax.random.PRNGKey(0), x)
    running_mean, running_sigma = np.array([10.0, -10.0, 2.0]), np.array([10.0, 0.1, 3.0])
    y, _ = module.apply({**variables, "batch_stats": renorm_stats(running_mean, running_sigma, 3)}, x, mutable=True)
    expected, *_ = renorm_reference(x, running_mean, running_sigma, 1.5, 2.5, 1.0, 0.0)  # step 3: (1.5, 2.5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_batch_renorm_gradient_treats_r_and_d_as_constants():
    x = rand(8, 3)
    w = rand(8, 3, seed=3)
    module = batch_renorm.SPEC.make(RENORM, WHOLE_BATCH)(True)
    variables = module.init(jax.random.PRNGKey(0), x)
    running_mean, running_sigma = np.array([1.0, 2.0, 3.0]), np.array([1.5, 5.5, 3.0])
    variables = {**variables, "batch_stats": renorm_stats(running_mean, running_sigma, 100)}
    _, _, _, r, _ = renorm_reference(x, running_mean, running_sigma, 3.0, 5.0, 1.0, 0.0)
    bn = flax_bn(True, RENORM)
    bn_variables = bn.init(jax.random.PRNGKey(0), x)

    def loss(apply, v):
        return lambda x: jnp.sum(w * apply(v, x, mutable=["batch_stats"])[0])

    grad = jax.grad(loss(module.apply, variables))(x)
    grad_bn = jax.grad(loss(bn.apply, bn_variables))(x)
    # y = r * BN(x) + d with r, d constant, so the gradient is r times BatchNorm's.
    np.testing.assert_allclose(grad, r * f64(grad_bn), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"renorm_r_max": 0.5}, "renorm_r_max must be >= 1"),
        ({"renorm_d_max": -1.0}, "renorm_d_max >= 0"),
        ({"renorm_hold_fraction": -0.1}, "norm.renorm_hold_fraction must be >= 0"),
        ({"renorm_r_ramp_fraction": -0.5}, "norm.renorm_r_ramp_fraction must be >= 0"),
        ({"renorm_d_ramp_fraction": -0.5}, "norm.renorm_d_ramp_fraction must be >= 0"),
        ({"renorm_train_steps": 0}, "norm.renorm_train_steps must be >= 1"),
    ],
)
def test_batch_renorm_options_are_checked_by_the_config_and_by_the_module(changes, message):
    config = dataclasses.replace(RENORM, **changes)
    with pytest.raises(ConfigError, match=message):
        batch_renorm.SPEC.check(config, 4)
    with pytest.raises(ValueError, match=message):
        run(batch_renorm.SPEC.make(config, WHOLE_BATCH)(True), rand(4, 4))
    batch_renorm.SPEC.check(RENORM, 4)


def test_zoo_metadata():
    for spec, name, dependent, running in (
        (instance.SPEC, "instance", False, False),
        (rms.SPEC, "rms", False, False),
        (ghost_batch.SPEC, "ghost_batch", True, True),
        (batch_renorm.SPEC, "batch_renorm", True, True),
    ):
        assert (spec.name, spec.batch_dependent, spec.running_stats) == (name, dependent, running)
        assert spec.scale_invariant and not spec.fuses_activation
        assert all(hasattr(CFG, option) for option in spec.options)
