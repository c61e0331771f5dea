"""FRN, EvoNorm-B0/S0, PowerNorm and weight standardization against their papers' formulas, and how models compose
them."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normbench.config import ConfigError, ModelConfig, NormConfig
from normbench.models import build_model
from normbench.norms import NORMS, WHOLE_BATCH, BatchStats, NormSpec, evonorm, frn, weight_std

CFG = NormConfig(momentum=0.9, epsilon=1e-3)


def rand(*shape, seed=0, loc=0.5, scale=2.0):
    return np.random.default_rng(seed).normal(loc, scale, shape)


def with_params(module, x, seed=1, **overrides):
    """The module's variables with every per-channel parameter drawn at random (or given), so the formulas'
    gamma, beta, tau and v1 are all exercised away from their initial values."""
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32))
    rng = np.random.default_rng(seed)
    params = {k: overrides.get(k, rng.normal(0.0, 1.0, v.shape)) for k, v in variables["params"].items()}
    return {**variables, "params": jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)}


def run(module, variables, x):
    y, updates = module.apply(variables, jnp.asarray(x, jnp.float32), mutable=["batch_stats"])
    return np.asarray(y, np.float64), updates


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 6)])
def test_frn_is_the_papers_formula(shape):
    x = rand(*shape)
    module = frn.SPEC.make(CFG, WHOLE_BATCH)(True)
    variables = with_params(module, x)
    y, _ = run(module, variables, x)
    p = {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}
    # The paper's FC case: an (N, C) input is (N, 1, 1, C), so nu^2 is x^2 itself.
    nu2 = (x**2).mean(axis=(1, 2), keepdims=True) if x.ndim == 4 else x**2
    close(y, np.maximum(p["scale"] * x / np.sqrt(nu2 + CFG.epsilon) + p["bias"], p["tau"]))


def b0_reference(x, p, batch_var, eps):
    spatial = tuple(range(1, x.ndim - 1))
    instance_var = x.var(axis=spatial, keepdims=True)
    denominator = np.maximum(np.sqrt(batch_var + eps), p["v1"] * x + np.sqrt(instance_var + eps))
    return x / denominator * p["scale"] + p["bias"]


@pytest.mark.parametrize("shape", [(5, 3, 3, 4), (9, 4)])
def test_evonorm_b0_train_mode_uses_the_batch_variance_and_updates_the_running_one(shape):
    x = rand(*shape)
    module = evonorm.SPEC_B0.make(CFG, WHOLE_BATCH)(True)
    variables = with_params(module, x)
    y, updates = run(module, variables, x)
    p = {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}
    batch_var = x.var(axis=tuple(range(x.ndim - 1)))  # biased, over (N, H, W)
    close(y, b0_reference(x, p, batch_var, CFG.epsilon))
    close(updates["batch_stats"]["var"], 0.9 * 1.0 + 0.1 * batch_var)


def test_evonorm_b0_eval_mode_uses_the_running_variance():
    x = rand(4, 2, 3, 3)
    module = evonorm.SPEC_B0.make(CFG, WHOLE_BATCH)(False)
    variables = with_params(module, x)
    running = np.array([0.5, 2.0, 9.0])
    variables = {**variables, "batch_stats": {"var": jnp.asarray(running, jnp.float32)}}
    y, updates = run(module, variables, x)
    p = {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}
    close(y, b0_reference(x, p, running, CFG.epsilon))
    close(updates["batch_stats"]["var"], running)


def test_evonorm_b0_ghost_groups_take_each_groups_own_variance():
    x = rand(6, 2, 2, 3)
    module = evonorm.SPEC_B0.make(CFG, BatchStats(group_size=3))(True)
    variables = with_params(module, x)
    y, updates = run(module, variables, x)
    whole = evonorm.SPEC_B0.make(CFG, WHOLE_BATCH)(True)
    halves = [run(whole, variables, x[i : i + 3]) for i in (0, 3)]
    close(y, np.concatenate([h[0] for h in halves]))
    mean_var = (halves[0][1]["batch_stats"]["var"] + halves[1][1]["batch_stats"]["var"]) / 2
    close(updates["batch_stats"]["var"], mean_var)


@pytest.mark.parametrize("config", [NormConfig(num_groups=2, epsilon=1e-3), NormConfig(group_size=3, epsilon=1e-3)])
@pytest.mark.parametrize("spatial", [(2, 3), ()])
def test_evonorm_s0_is_the_papers_formula(config, spatial):
    x = rand(4, *spatial, 6)
    module = evonorm.SPEC_S0.make(config, WHOLE_BATCH)(True)
    variables = with_params(module, x)
    y, _ = run(module, variables, x)
    p = {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}
    g = x.reshape(x.shape[:-1] + (2, 3))  # 2 groups of 3 channels
    axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
    std = np.broadcast_to(np.sqrt(g.var(axis=axes, keepdims=True) + config.epsilon), g.shape).reshape(x.shape)
    sigmoid = 1 / (1 + np.exp(-p["v1"] * x))
    close(y, x * sigmoid / std * p["scale"] + p["bias"])


def test_evonorm_s0_checks_its_groups_as_group_norm_does():
    with pytest.raises(ConfigError, match="3 groups do not divide a layer of 100 channels"):
        evonorm.SPEC_S0.check(NormConfig(num_groups=3), 100)
    evonorm.SPEC_S0.check(NormConfig(num_groups=4), 100)


def test_per_example_zoo_norms_ignore_the_rest_of_the_batch():
    x = rand(4, 2, 2, 6)
    other = x.copy()
    other[1:] = rand(3, 2, 2, 6, seed=5)
    for spec in (frn.SPEC, evonorm.SPEC_S0):
        module = spec.make(NormConfig(num_groups=2), WHOLE_BATCH)(True)
        variables = with_params(module, x)
        close(run(module, variables, x)[0][0], run(module, variables, other)[0][0])


def test_metadata():
    assert all(s.fuses_activation for s in (frn.SPEC, evonorm.SPEC_B0, evonorm.SPEC_S0))
    assert evonorm.SPEC_B0.batch_dependent and evonorm.SPEC_B0.running_stats
    assert not (evonorm.SPEC_S0.batch_dependent or evonorm.SPEC_S0.running_stats or evonorm.SPEC_S0.scale_invariant)
    assert frn.SPEC.scale_invariant and evonorm.SPEC_B0.scale_invariant


def test_a_fused_norm_gets_no_second_activation():
    # relu after FRN would clip the outputs that a negative tau lets through.
    config = ModelConfig(hidden=(4,), activation="relu")
    net = build_model("mlp", config, frn.SPEC.make(CFG, WHOLE_BATCH), 3, fuses_activation=True)
    x = rand(5, 2, 2, 1)
    variables = net.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32), train=True)
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), variables["params"])
    params["FilterResponseNorm_0"]["tau"] = np.full(4, -5.0)
    params["FilterResponseNorm_0"]["bias"] = np.full(4, -1.0)
    logits = net.apply({"params": params}, jnp.asarray(x, jnp.float32), train=True)
    d0, n0, d1 = params["Dense_0"], params["FilterResponseNorm_0"], params["Dense_1"]
    h = x.reshape(5, -1) @ d0["kernel"] + d0["bias"]
    h = np.maximum(n0["scale"] * h / np.sqrt(h**2 + CFG.epsilon) + n0["bias"], n0["tau"])
    assert (h < 0).any()
    close(logits, h @ d1["kernel"] + d1["bias"])


@pytest.mark.parametrize("model", ["cnn", "resnet20"])
def test_fused_activation_is_the_identity_throughout(model):
    net = build_model(model, ModelConfig(channels=(4,)), frn.SPEC.make(CFG, WHOLE_BATCH), 3, fuses_activation=True)
    x = jnp.asarray(rand(3, 5))
    np.testing.assert_array_equal(net.activation(x), x)


def test_standardized_kernels_have_zero_mean_and_unit_variance_per_output_channel():
    for shape in ((7, 5), (3, 3, 4, 6)):
        w = np.asarray(weight_std.standardize(jnp.asarray(rand(*shape), jnp.float32)), np.float64)
        fan_in = tuple(range(w.ndim - 1))
        np.testing.assert_allclose(w.mean(fan_in), 0.0, atol=1e-6)
        np.testing.assert_allclose(w.var(fan_in), 1.0, rtol=1e-5)


def scale_norm_fed_kernels(params, seed):
    """Multiply every kernel but the classifier's (a plain `Dense_0` at the top) by its own positive factor."""
    rng = np.random.default_rng(seed)

    def scale(path, p):
        feeds_norm = path[-1].key == "kernel" and path[0].key != "Dense_0"
        return p * rng.uniform(0.01, 100.0) if feeds_norm else p

    return jax.tree_util.tree_map_with_path(scale, params)


@pytest.mark.parametrize("model", ["mlp", "cnn", pytest.param("resnet20", marks=pytest.mark.slow)])
def test_weight_standardized_models_ignore_the_scale_of_their_kernels(model):
    config = ModelConfig(hidden=(6, 6), channels=(4, 8))
    x = jnp.asarray(rand(3, 8, 8, 2), jnp.float32)
    logits = {}
    for ws in (True, False):
        net = build_model(model, config, NORMS["none"].make(CFG, WHOLE_BATCH), 5, standardize_weights=ws)
        variables = net.init(jax.random.PRNGKey(0), x, train=False)
        scaled = {**variables, "params": scale_norm_fed_kernels(variables["params"], seed=3)}
        logits[ws] = [np.asarray(net.apply(v, x, train=False)) for v in (variables, scaled)]
    np.testing.assert_allclose(logits[True][0], logits[True][1], rtol=1e-4, atol=1e-5)
    # The invariance is WS's doing: without it, no norm undoes the scaling.
    assert not np.allclose(logits[False][0], logits[False][1], rtol=1e-2)


def test_weight_standardization_keeps_parameter_counts():
    config = ModelConfig(hidden=(6, 6), channels=(4, 8))
    x = jnp.ones((1, 8, 8, 2))
    for model in ("mlp", "cnn", "resnet20"):
        sizes = [
            sum(p.size for p in jax.tree.leaves(net.init(jax.random.PRNGKey(0), x, train=False)))
            for net in (
                build_model(model, config, NORMS["batch"].make(CFG, WHOLE_BATCH), 5, standardize_weights=ws)
                for ws in (False, True)
            )
        ]
        assert sizes[0] == sizes[1]


@pytest.mark.skipif(
    "standardizes_weights" not in {f.name for f in dataclasses.fields(NormSpec)},
    reason="the registry's standardizes_weights field is added when the lead integrates",
)
def test_with_weight_standardization_renames_and_flags_the_spec():
    spec = weight_std.with_weight_standardization(NORMS["group"])
    assert spec.name == "group+ws" and spec.standardizes_weights
    for field in ("make", "batch_dependent", "running_stats", "options", "fuses_activation", "check"):
        assert getattr(spec, field) == getattr(NORMS["group"], field)


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"num_groups": 4}, "evonorm_s0: 4 groups do not divide a layer of 6 channels"),
        ({"num_groups": 0}, "evonorm_s0: norm.num_groups must be positive, got 0"),
        ({"group_size": 4}, "evonorm_s0: norm.group_size=4 does not divide a layer of 6 channels"),
        ({"num_groups": None}, "evonorm_s0 takes norm.num_groups or norm.group_size, exactly one"),
        ({"num_groups": 2, "group_size": 3}, "evonorm_s0 takes norm.num_groups or norm.group_size, exactly one"),
    ],
)
def test_evonorm_s0_used_directly_rejects_groups_that_do_not_tile_its_channels(groups, message):
    with pytest.raises(ValueError, match=message):
        evonorm.EvoNormS0(**groups).init(jax.random.PRNGKey(0), jnp.ones((2, 6)))


def test_group_norm_used_directly_rejects_groups_that_do_not_divide_its_channels():
    # Flax's GroupNorm, which `group`, `layer` and `instance` are, checks this itself.
    module = NORMS["group"].make(NormConfig(num_groups=4), WHOLE_BATCH)(True)
    with pytest.raises(ValueError, match=r"groups \(4\) does not divide the number of channels \(6\)"):
        module.init(jax.random.PRNGKey(0), jnp.ones((2, 6)))


# power


def _power_vjp(variables, x, g, config=CFG):
    """The module's train-mode output and its VJP's cotangents for x, the params and the batch statistics."""
    module = NORMS["power"].make(config, WHOLE_BATCH)(True)

    def apply(x, params, stats):
        return module.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])[0]

    y, vjp = jax.vjp(apply, x, variables["params"], variables["batch_stats"])
    return y, vjp(g)


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 4)])
def test_power_backward_is_algorithm_1_in_float64(shape):
    """dL/dx = (gamma g - nu x_hat) / sqrt(psi^2 + eps), no gradient to psi^2, and nu's step (1 - momentum) times
    mean(g~ x_hat) returned as its cotangent; gamma and beta get their exact gradients."""
    with jax.enable_x64(True):
        x, g = jnp.asarray(rand(*shape)), jnp.asarray(rand(*shape, seed=2))
        rng = np.random.default_rng(3)
        c = shape[-1]
        variables = {
            "params": {"scale": jnp.asarray(rng.normal(1, 0.5, c)), "bias": jnp.asarray(rng.normal(0, 1, c))},
            "batch_stats": {"psi2": jnp.asarray(rng.uniform(0.5, 4, c)), "nu": jnp.asarray(rng.normal(0, 0.3, c))},
        }
        _, (dx, dparams, dstats) = _power_vjp(variables, x, g)
        p = {k: np.asarray(v) for k, v in variables["params"].items()}
        s = {k: np.asarray(v) for k, v in variables["batch_stats"].items()}
        xn, gn = np.asarray(x), np.asarray(g)
        axes = tuple(range(len(shape) - 1))
        x_hat = xn / np.sqrt(s["psi2"] + CFG.epsilon)
        g_tilde = p["scale"] * gn - s["nu"] * x_hat
        np.testing.assert_allclose(dx, g_tilde / np.sqrt(s["psi2"] + CFG.epsilon), rtol=1e-10)
        np.testing.assert_allclose(dstats["nu"], (1 - CFG.momentum) * (g_tilde * x_hat).mean(axes), rtol=1e-10)
        np.testing.assert_array_equal(dstats["psi2"], 0.0)
        np.testing.assert_allclose(dparams["scale"], (gn * x_hat).sum(axes), rtol=1e-10)
        np.testing.assert_allclose(dparams["bias"], gn.sum(axes), rtol=1e-10)


def test_power_backward_is_the_exact_gradient_at_the_batch_statistics():
    """With psi^2 the batch's quadratic mean and nu = mean(g x_hat), the approximate backward is the exact gradient
    of x / sqrt(mean(x^2) + eps): the approximation is only in using running values for the two."""
    with jax.enable_x64(True):
        x, g = jnp.asarray(rand(8, 3)), jnp.asarray(rand(8, 3, seed=2))
        quad = np.asarray(x**2).mean(0)
        x_hat = np.asarray(x) / np.sqrt(quad + CFG.epsilon)
        nu = (np.asarray(g) * x_hat).mean(0)
        variables = {
            "params": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
            "batch_stats": {"psi2": jnp.asarray(quad), "nu": jnp.asarray(nu)},
        }
        y, (dx, _, _) = _power_vjp(variables, x, g)
        exact = jax.vjp(lambda x: x / jnp.sqrt((x**2).mean(0) + CFG.epsilon), x)[1](g)[0]
        np.testing.assert_allclose(y, x_hat, rtol=1e-10)
        np.testing.assert_allclose(dx, exact, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_power_running_statistics_start_at_running_var_init_and_zero_and_move_in_training():
    """psi^2 starts at norm.running_var_init (may be traced) and moves in the forward pass; nu starts at 0 and
    moves by the trainer's step, the gradient with respect to it."""
    import optax

    from normbench.core.train import TrainState, train_step
    from normbench.models import build_model

    x = jnp.asarray(rand(6, 2, 2, 3), jnp.float32)
    module = NORMS["power"].make(dataclasses.replace(CFG, running_var_init=0.5), WHOLE_BATCH)(True)
    stats = module.init(jax.random.PRNGKey(0), x)["batch_stats"]
    np.testing.assert_array_equal(stats["psi2"], 0.5)
    np.testing.assert_array_equal(stats["nu"], 0.0)

    def init(value):
        config = dataclasses.replace(CFG, running_var_init=value)
        return NORMS["power"].make(config, WHOLE_BATCH)(True).init(jax.random.PRNGKey(0), x)

    traced = jax.jit(jax.vmap(init))(jnp.float32([0.5, 2.0]))
    np.testing.assert_array_equal(traced["batch_stats"]["psi2"][:, 0], [0.5, 2.0])

    spec = NORMS["power"]
    net = build_model("mlp", ModelConfig(hidden=(4,), init="he"), spec.make(CFG, WHOLE_BATCH), 3, batch_dependent=False)
    variables = net.init(jax.random.PRNGKey(0), x, train=False)
    tx = optax.sgd(0.1)
    state = TrainState(variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    y = jnp.arange(6) % 3
    moved, _ = train_step(net, tx, state, x, y, backward_stats=True)
    still, _ = train_step(net, tx, state, x, y, backward_stats=False)
    assert not np.allclose(moved.batch_stats["PowerNorm_0"]["nu"], 0.0)
    np.testing.assert_array_equal(still.batch_stats["PowerNorm_0"]["nu"], 0.0)
    np.testing.assert_allclose(moved.batch_stats["PowerNorm_0"]["psi2"], still.batch_stats["PowerNorm_0"]["psi2"])
    jax.tree.map(np.testing.assert_array_equal, moved.params, still.params)


def test_only_power_moves_statistics_in_its_backward_pass():
    assert [name for name, spec in NORMS.items() if spec.backward_stats] == ["power"]
