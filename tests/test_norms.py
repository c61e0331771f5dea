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


# Every registered norm in float64, against a NumPy reference written from its paper's formula.

F64 = NormConfig(momentum=0.8, epsilon=1e-5, num_groups=2, ghost_size=3, renorm_train_steps=100)


def _moments(x, axes):
    mu = x.mean(axes, keepdims=True)
    return mu, ((x - mu) ** 2).mean(axes, keepdims=True)


def _affine(y, p):
    return y * p["scale"] + p.get("bias", 0.0)


def _batch_norm(x, p, s, train, c, groups=1):
    """BatchNorm over (groups of) the batch: output and the running statistics after the step (or s in eval)."""
    if not train:
        return _affine((x - s["mean"]) / np.sqrt(s["var"] + c.epsilon), p), s
    g = x.reshape(groups, -1, *x.shape[1:])
    axes = tuple(range(1, g.ndim - 1))
    mu, var = _moments(g, axes)
    y = ((g - mu) / np.sqrt(var + c.epsilon)).reshape(x.shape)
    m = c.momentum
    mu, var = mu.mean(axes).mean(0), var.mean(axes).mean(0)  # the mean over groups
    stats = {"mean": m * s["mean"] + (1 - m) * mu, "var": m * s["var"] + (1 - m) * var}
    return _affine(y, p), stats


def _renorm(x, p, s, train, c):
    """Batch renorm past its ramps (Algorithm 1 of the paper): running averages of mu and sigma."""
    if not train:
        return _affine((x - s["mean"]) / s["sigma"], p), s
    axes = tuple(range(x.ndim - 1))
    mu_b, sigma_b = x.mean(axes), np.sqrt(x.var(axes) + c.epsilon)
    r = np.clip(sigma_b / s["sigma"], 1 / c.renorm_r_max, c.renorm_r_max)
    d = np.clip((mu_b - s["mean"]) / s["sigma"], -c.renorm_d_max, c.renorm_d_max)
    m = c.momentum
    stats = {"mean": m * s["mean"] + (1 - m) * mu_b, "sigma": m * s["sigma"] + (1 - m) * sigma_b}
    return _affine((x - mu_b) / sigma_b * r + d, p), {**stats, "steps": s["steps"] + 1}


def _per_example(x, p, c, group_channels=None):
    """Layer (all channels in one group), group (group_channels each) or instance (1) normalization."""
    g = x.reshape(*x.shape[:-1], -1, group_channels or x.shape[-1])
    mu, var = _moments(g, tuple(range(1, g.ndim - 2)) + (g.ndim - 1,))
    return _affine(((g - mu) / np.sqrt(var + c.epsilon)).reshape(x.shape), p)


def _evonorm_b0(x, p, s, train, c):
    stats = s
    if train:
        batch_var = x.var(tuple(range(x.ndim - 1)))
        stats = {"var": c.momentum * s["var"] + (1 - c.momentum) * batch_var}
    else:
        batch_var = s["var"]
    instance_var = x.var(tuple(range(1, x.ndim - 1)), keepdims=True)
    denominator = np.maximum(np.sqrt(batch_var + c.epsilon), p["v1"] * x + np.sqrt(instance_var + c.epsilon))
    return _affine(x / denominator, p), stats


def _evonorm_s0(x, p, c):
    g = x.reshape(*x.shape[:-1], 2, -1)
    _, var = _moments(g, tuple(range(1, g.ndim - 2)) + (g.ndim - 1,))
    std = np.broadcast_to(np.sqrt(var + c.epsilon), g.shape).reshape(x.shape)
    return _affine(x / (1 + np.exp(-p["v1"] * x)) / std, p)


def _frn(x, p, c):
    nu2 = (x**2).mean(tuple(range(1, x.ndim - 1)), keepdims=True)
    return np.maximum(_affine(x / np.sqrt(nu2 + c.epsilon), p), p["tau"])


def _power(x, p, s, train, c):
    """PowerNorm (Algorithm 1): the running quadratic mean psi^2 divides in train mode as in eval; train mode then
    moves it toward the batch's mean(x^2). nu moves only in the backward pass."""
    y = _affine(x / np.sqrt(s["psi2"] + c.epsilon), p)
    if not train:
        return y, s
    quad = (x**2).mean(tuple(range(x.ndim - 1)))
    return y, {**s, "psi2": c.momentum * s["psi2"] + (1 - c.momentum) * quad}


def _rms(x, p, c):
    return p["scale"] * x / np.sqrt((x**2).mean(tuple(range(1, x.ndim)), keepdims=True) + c.epsilon)


# name -> reference(x, params, batch_stats, train, config) -> (y, batch_stats after the call)
REFERENCES = {
    "none": lambda x, p, s, train, c: (x, s),
    "batch": _batch_norm,
    "layer": lambda x, p, s, train, c: (_per_example(x, p, c), s),
    "group": lambda x, p, s, train, c: (_per_example(x, p, c, x.shape[-1] // 2), s),
    "instance": lambda x, p, s, train, c: (_per_example(x, p, c, 1), s),
    "rms": lambda x, p, s, train, c: (_rms(x, p, c), s),
    "ghost_batch": lambda x, p, s, train, c: _batch_norm(x, p, s, train, c, groups=x.shape[0] // c.ghost_size),
    "batch_renorm": _renorm,
    "frn": lambda x, p, s, train, c: (_frn(x, p, c), s),
    "evonorm_b0": _evonorm_b0,
    "evonorm_s0": lambda x, p, s, train, c: (_evonorm_s0(x, p, c), s),
    "power": _power,
}


def test_every_norm_has_a_float64_reference():
    missing = {name.removesuffix("+ws") for name in NORMS} - set(REFERENCES)
    assert not missing, f"add a NumPy reference of {missing} to REFERENCES"


def _f64_variables(variables, rng):
    """Parameters drawn at random but stored float32, as a model's are; running statistics away from their init."""
    draw = lambda v: jnp.asarray(rng.normal(1.0, 0.5, v.shape), jnp.float32)  # noqa: E731
    params = jax.tree.map(draw, variables.get("params", {}))
    moved = {"mean": lambda v: rng.normal(1.0, 1.0, v.shape), "var": lambda v: rng.uniform(0.5, 4.0, v.shape),
             "sigma": lambda v: rng.uniform(0.5, 2.0, v.shape),
             "steps": lambda v: np.float64(10**6), "psi2": lambda v: rng.uniform(0.5, 4.0, v.shape),
             "nu": lambda v: rng.normal(0.0, 0.1, v.shape)}  # fmt: skip
    stats = {k: jnp.asarray(moved[k](v), jnp.float64) for k, v in variables.get("batch_stats", {}).items()}
    return {**({"params": params} if params else {}), **({"batch_stats": stats} if stats else {})}


@pytest.mark.parametrize("shape", [(6, 4), (6, 3, 3, 4)])
@pytest.mark.parametrize("name", list(NORMS))
def test_float64_input_is_normalized_in_float64(name, shape):
    """Train mode (and eval mode with running statistics) on float64 input: float64 output and statistics that
    match the float64 formula to 1e-10, which float32 arithmetic anywhere on the way (about 1e-7) would miss."""
    spec = NORMS[name]
    reference = REFERENCES[name.removesuffix("+ws")]
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(3.0, 2.0, shape))
        for train in (True, False) if spec.running_stats else (True,):
            module = spec.make(F64, WHOLE_BATCH)(train)
            variables = _f64_variables(module.init(jax.random.PRNGKey(0), x), rng)
            y, updates = module.apply(variables, x, mutable=["batch_stats"])
            p = {k: np.asarray(v, np.float64) for k, v in variables.get("params", {}).items()}
            s = {k: np.asarray(v) for k, v in variables.get("batch_stats", {}).items()}
            expected, expected_stats = reference(np.asarray(x), p, s, train, F64)
            what = f"{name} (train={train})"
            assert y.dtype == jnp.float64, f"{what}: float64 input gave {y.dtype}"
            np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12, err_msg=what)
            for key, value in updates.get("batch_stats", {}).items():
                assert value.dtype == jnp.float64, f"{what}: running {key} is {value.dtype}"
                np.testing.assert_allclose(value, expected_stats[key], rtol=1e-10, err_msg=f"{what}: running {key}")


# BatchNorm is normbench's own module now; with the defaults it is Flax's.


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 3, 4)])
def test_batch_is_flax_batch_norm_in_train_and_eval_and_after_steps(shape):
    import flax.linen as nn

    def flax_bn(train):
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-6, use_fast_variance=False)

    module, bn = NORMS["batch"].make(CFG, WHOLE_BATCH), flax_bn
    variables = module(True).init(jax.random.PRNGKey(0), rand(*shape))
    bn_variables = bn(True).init(jax.random.PRNGKey(0), rand(*shape))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, bn_variables)
    for step in range(4):
        x = rand(*shape, seed=step, loc=step - 1.0, scale=1.0 + step)
        y, updates = module(True).apply(variables, x, mutable=["batch_stats"])
        y_bn, updates_bn = bn(True).apply(bn_variables, x, mutable=["batch_stats"])
        np.testing.assert_allclose(y, y_bn, rtol=1e-6, atol=1e-6)
        variables, bn_variables = {**variables, **updates}, {**bn_variables, **updates_bn}
        for a, b in zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(bn_variables["batch_stats"])):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            module(False).apply(variables, x), bn(False).apply(bn_variables, x), rtol=1e-6, atol=1e-6
        )


RUNNING_VAR_NORMS = [name for name, spec in NORMS.items() if "running_var_init" in spec.options]
# batch_renorm averages sigma, not the variance: tests/test_norm_zoo_a.py checks its init and unbiased target.
# power keeps a quadratic mean (psi^2, no mean subtracted), which has no n / (n - 1) bias to correct:
# tests/test_norm_zoo_b.py checks its init.
VAR_NORMS = [name for name in RUNNING_VAR_NORMS if name not in ("batch_renorm", "power")]


def _keeps_a_running_scale(name: str) -> bool:
    """Whether a norm's running statistics hold a variance or another scale (BRN's sigma, PowerNorm's psi^2), not
    only a mean as mean-only BatchNorm's do (docs/adding_a_norm.md)."""
    module = NORMS[name].make(F64, WHOLE_BATCH)(True)
    return bool(set(module.init(jax.random.PRNGKey(0), rand(6, 4)).get("batch_stats", {})) - {"mean"})


def test_every_norm_with_a_running_variance_reads_its_ablations():
    with_var = [name for name, spec in NORMS.items() if spec.running_stats and _keeps_a_running_scale(name)]
    assert RUNNING_VAR_NORMS == with_var
    assert all("unbiased_running_var" in NORMS[name].options for name in with_var if name != "power")


@pytest.mark.parametrize("name", VAR_NORMS)
def test_running_var_init_sets_the_running_variance_before_the_first_step_and_may_be_traced(name):
    x = rand(6, 2, 2, 3)

    def first_step(init):
        module = NORMS[name].make(NormConfig(momentum=0.9, running_var_init=init), WHOLE_BATCH)(True)
        variables = module.init(jax.random.PRNGKey(0), x)
        return variables["batch_stats"]["var"], module.apply(variables, x, mutable=["batch_stats"])[1]

    at_one, after_one = first_step(1.0)
    at_zero, after_zero = first_step(0.0)
    np.testing.assert_array_equal(at_one, 1.0)
    np.testing.assert_array_equal(at_zero, 0.0)
    # running = 0.9 init + 0.1 batch: the two inits end 0.9 apart.
    np.testing.assert_allclose(after_one["batch_stats"]["var"] - after_zero["batch_stats"]["var"], 0.9, rtol=1e-5)
    traced_init, traced_after = jax.jit(jax.vmap(first_step))(jnp.float32([1.0, 0.0]))
    np.testing.assert_array_equal(traced_init, np.stack([at_one, at_zero]))
    np.testing.assert_allclose(traced_after["batch_stats"]["var"][1], after_zero["batch_stats"]["var"], rtol=1e-6)


@pytest.mark.parametrize("name", VAR_NORMS)
@pytest.mark.parametrize("group", [None, 3])
def test_unbiased_running_var_moves_toward_n_over_n_minus_1_times_the_batch_variance(name, group):
    from normbench.norms import BatchStats

    x = rand(6, 2, 2, 3)
    stats = BatchStats(group_size=group)
    n = (group or 6) * 4  # values per statistic: examples x spatial positions
    groups = np.asarray(x, np.float64).reshape(-1, n, 3)
    biased = groups.var(1).mean(0)
    for unbiased, target in ((False, biased), (True, groups.var(1, ddof=1).mean(0))):
        config = NormConfig(momentum=0.9, unbiased_running_var=unbiased)
        _, _, updates = apply_with(NORMS[name].make(config, stats), x)
        np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * target, rtol=1e-5)
    assert not np.allclose(biased * n / (n - 1), biased, rtol=1e-2)  # the test tells the two apart


def apply_with(factory, x, train=True):
    module = factory(train)
    variables = module.init(jax.random.PRNGKey(0), x)
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    return np.asarray(y), variables, updates


def test_a_negative_running_var_init_is_rejected_by_the_config_and_by_the_module():
    from normbench.config import Config, SweepConfig
    from normbench.validate import validate

    config = Config(norm=NormConfig(running_var_init=-1.0), sweep=SweepConfig(norms=("batch",)))
    with pytest.raises(ConfigError, match="norm.running_var_init must be at least 0, got -1.0"):
        validate(config)
    for name in RUNNING_VAR_NORMS:
        with pytest.raises(ValueError, match="norm.running_var_init must be >= 0, got -1.0"):
            apply_with(NORMS[name].make(config.norm, WHOLE_BATCH), rand(4, 3))
