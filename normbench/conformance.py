"""What every registered norm must do, checked against what its `NormSpec` claims.

Each check takes a `NormSpec` and raises AssertionError saying what broke. `tests/test_conformance.py` runs
every check on every entry of `NORMS`, so a new norm is checked the moment it is registered; call them
directly to check a norm under development:

    from normbench.conformance import CHECKS
    for check in CHECKS: check(my_spec)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import NormConfig
from normbench.norms.registry import EXAMPLE_WEIGHT, WHOLE_BATCH, BatchStats, NormSpec

# Options every norm accepts: 2 groups divide the 4 channels of the test inputs.
# 100 train steps: batch_renorm's schedule needs the run's length, which the trainer otherwise gives it.
CONFIG = NormConfig(momentum=0.9, epsilon=1e-5, num_groups=2, renorm_train_steps=100)
SHAPES = ((6, 4), (6, 3, 3, 4))


def _inputs(shape, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(1.5, 2.0, shape), dtype)


def _apply(spec: NormSpec, x, train: bool, variables=None, config=CONFIG):
    module = spec.make(config, WHOLE_BATCH)(train)
    if variables is None:
        variables = module.init(jax.random.PRNGKey(0), x)
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    return y, variables, updates


def _close(a, b, what, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol, atol, err_msg=what)


def keeps_shape_and_dtype(spec: NormSpec):
    for shape in SHAPES:
        for train in (True, False):
            x = _inputs(shape)
            y, _, _ = _apply(spec, x, train)
            assert y.shape == x.shape and y.dtype == x.dtype, f"{spec.name}: {x.shape} {x.dtype} -> {y.shape} {y.dtype}"


def running_stats_as_declared(spec: NormSpec):
    """Norms that claim running statistics keep them in `batch_stats`, and train mode updates them."""
    x = _inputs(SHAPES[1])
    _, variables, updates = _apply(spec, x, True)
    assert ("batch_stats" in variables) == spec.running_stats, f"{spec.name}: batch_stats vs running_stats"
    if spec.running_stats:
        changed = [
            not np.allclose(a, b) for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(variables["batch_stats"]))
        ]
        assert any(changed), f"{spec.name}: a train-mode pass left its running statistics unchanged"


def batch_dependence_as_declared(spec: NormSpec):
    """An example's train-mode output changes with the rest of its batch if and only if batch_dependent."""
    for shape in SHAPES:
        x = _inputs(shape)
        y, variables, _ = _apply(spec, x, True)
        other = x.at[1:].set(_inputs((shape[0] - 1, *shape[1:]), seed=1) * 3)
        y_other, _, _ = _apply(spec, other, True, variables)
        depends = not np.allclose(y[0], y_other[0], rtol=1e-5, atol=1e-6)
        assert depends == spec.batch_dependent, (
            f"{spec.name} claims batch_dependent={spec.batch_dependent}, but example 0's output "
            f"{'changes' if depends else 'does not change'} with the rest of its batch"
        )


def scale_invariance_as_declared(spec: NormSpec):
    """Scaling the preceding layer's weights scales the norm's input; norms that promise invariance ignore it
    (up to epsilon, which the check makes negligible: FRN on one value per channel is sign(x) but for it)."""
    if not spec.scale_invariant:
        return
    config = dataclasses.replace(CONFIG, epsilon=1e-12)
    for shape in SHAPES:
        x = _inputs(shape)
        for train in (True, False):
            y, variables, _ = _apply(spec, x, train, config=config)
            if not train and spec.running_stats:
                continue  # running statistics were gathered at one scale
            y_scaled, _, _ = _apply(spec, 3.7 * x, train, variables, config=config)
            _close(y_scaled, y, f"{spec.name}: output changed when its input was scaled by 3.7 (train={train})")


def train_equals_eval_without_batch_statistics(spec: NormSpec):
    if spec.batch_dependent:
        return
    x = _inputs(SHAPES[1])
    y_train, variables, _ = _apply(spec, x, True)
    y_eval, _, _ = _apply(spec, x, False, variables)
    _close(y_eval, y_train, f"{spec.name} is batch-independent but differs between train and eval mode")


def jit_equals_eager(spec: NormSpec):
    x = _inputs(SHAPES[1])
    for train in (True, False):
        module = spec.make(CONFIG, WHOLE_BATCH)(train)
        variables = module.init(jax.random.PRNGKey(0), x)

        def apply(v, x, module=module):
            return module.apply(v, x, mutable=["batch_stats"])

        eager, jitted = apply(variables, x), jax.jit(apply)(variables, x)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
            _close(a, b, f"{spec.name}: jit differs from eager (train={train})")


def vmap_over_models_equals_a_loop(spec: NormSpec):
    """Each model of a vmapped grid sees only its own batch: batch statistics never cross the model axis."""
    xs = jnp.stack([_inputs(SHAPES[1], seed=s) * (1 + s) for s in range(3)])
    module = spec.make(CONFIG, WHOLE_BATCH)(True)
    variables = jax.vmap(lambda k, x: module.init(k, x))(jax.random.split(jax.random.PRNGKey(0), 3), xs)

    def apply(v, x):
        return module.apply(v, x, mutable=["batch_stats"])

    grid = jax.vmap(apply)(variables, xs)
    for m in range(3):
        alone = apply(jax.tree.map(lambda a, m=m: a[m], variables), xs[m])
        for a, b in zip(jax.tree.leaves(grid), jax.tree.leaves(alone)):
            _close(a[m], b, f"{spec.name}: model {m} of a vmapped grid differs from the same model alone")


def _moved_variables(spec: NormSpec, shape):
    """Variables after one train step on other inputs, so checks see running statistics away from their init."""
    _, variables, updates = _apply(spec, _inputs(shape, seed=3), True)
    return {**variables, **updates}


def _mean_over(trees):
    return jax.tree.map(lambda *leaves: jnp.mean(jnp.stack(leaves), axis=0), *trees)


def ghost_groups_are_separate_batches(spec: NormSpec):
    """With `BatchStats(group_size=g)` a batch-dependent norm is the norm applied to each group of g consecutive
    examples alone, and its running statistics move as the mean of those groups' would; also with g traced under
    jit, and g = B is the whole batch."""
    if not spec.batch_dependent:
        return

    def grouped(g, variables, x):
        return spec.make(CONFIG, BatchStats(group_size=g))(True).apply(variables, x, mutable=["batch_stats"])

    for shape in SHAPES:
        x, variables = _inputs(shape), _moved_variables(spec, shape)
        for g in (2, 3, shape[0]):
            parts = [_apply(spec, x[k : k + g], True, variables) for k in range(0, shape[0], g)]
            expected_y = jnp.concatenate([y for y, _, _ in parts])
            expected_stats = _mean_over([updates for _, _, updates in parts])
            for how, (y, updates) in (
                ("static", grouped(g, variables, x)),
                ("traced under jit", jax.jit(grouped)(jnp.int32(g), variables, x)),
            ):
                what = f"{spec.name} with group_size={g} ({how}) on {shape}"
                _close(y, expected_y, f"{what}: output is not the norm of each group alone")
                for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected_stats)):
                    _close(a, b, f"{what}: running statistics are not the mean of each group's")


def synced_devices_are_one_batch(spec: NormSpec):
    """With `BatchStats(axis_name=...)` a batch-dependent norm on the batch split over that axis's devices is the
    norm on the whole batch, and every device's running statistics are the whole batch's. A vmap with the axis
    name stands in for the device mesh: its collectives are the same as a shard_map's."""
    if not spec.batch_dependent:
        return
    module = spec.make(CONFIG, BatchStats(axis_name="devices"))(True)
    on_devices = jax.vmap(
        lambda variables, x: module.apply(variables, x, mutable=["batch_stats"]), (None, 0), axis_name="devices"
    )
    for shape in SHAPES:
        x, variables = _inputs(shape), _moved_variables(spec, shape)
        y_whole, _, updates_whole = _apply(spec, x, True, variables)
        for devices in (2, 3):
            y, updates = on_devices(variables, x.reshape(devices, -1, *shape[1:]))
            what = f"{spec.name} synced over {devices} devices on {shape}"
            _close(y.reshape(shape), y_whole, f"{what}: output is not the whole batch's")
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(updates_whole)):
                for d in range(devices):
                    _close(a[d], b, f"{what}: device {d}'s running statistics are not the whole batch's")


def traced_epsilon_and_momentum(spec: NormSpec):
    """The sweep vmaps `norm.epsilon` and `norm.momentum` as value axes, so a norm may only do arithmetic with
    them: a vmap over two values gives what the two values give alone."""
    x = _inputs(SHAPES[1])
    variables = _moved_variables(spec, SHAPES[1])
    epsilons, momenta = np.float32([1e-5, 0.5]), np.float32([0.9, 0.5])
    batch_stats = (WHOLE_BATCH, BatchStats(group_size=3)) if spec.batch_dependent else (WHOLE_BATCH,)
    for stats in batch_stats:
        for train in (True, False):

            def apply(epsilon, momentum, stats=stats, train=train):
                config = dataclasses.replace(CONFIG, epsilon=epsilon, momentum=momentum)
                return spec.make(config, stats)(train).apply(variables, x, mutable=["batch_stats"])

            grid = jax.vmap(apply)(epsilons, momenta)
            for i in range(2):
                alone = apply(float(epsilons[i]), float(momenta[i]))
                what = f"{spec.name} with {stats}, train={train}"
                for a, b in zip(jax.tree.leaves(grid), jax.tree.leaves(alone)):
                    _close(a[i], b, f"{what}: vmapped epsilon and momentum differ from value {i} alone")


def example_weighting_as_declared(spec: NormSpec):
    """Inference example weighting (Summers & Dinneen, 2020), which a norm declares by listing
    `norm.inference_example_weight` among its options (`NormSpec.weights_examples`). A norm that declares it keeps
    running statistics; at a weight of 0 given as an array (so not skipped as a config's 0 is) its eval mode is
    the plain one up to float rounding (XLA turns a division by per-channel statistics into a product with their
    reciprocal, which per-example ones do not get, so the bits may differ); and with the weight 1/B (an example's
    share of its batch statistic in training) and running statistics taken, momentum 0, from the other B - 1
    examples of a batch, it normalizes each example as train mode does on the whole batch, the weight traced
    under jit as the trainer passes it. A norm that does not declare it leaves its eval mode alone."""

    def evaluate(weight, variables, x):
        config = dataclasses.replace(CONFIG, inference_example_weight=weight)
        return spec.make(config, WHOLE_BATCH)(False).apply(variables, x, mutable=["batch_stats"])[0]

    for shape in SHAPES:
        x, variables = _inputs(shape), _moved_variables(spec, shape)
        y = evaluate(0.0, variables, x)
        if not spec.weights_examples:
            what = f"{spec.name}: its eval mode reads {EXAMPLE_WEIGHT}, which its options do not list"
            _close(evaluate(0.5, variables, x), y, what)
            continue
        assert spec.running_stats, f"{spec.name} lists {EXAMPLE_WEIGHT} among its options but keeps no running stats"
        what = f"{spec.name} on {shape}: eval mode with {EXAMPLE_WEIGHT} = 0 differs from its plain eval mode"
        _close(evaluate(jnp.float32(0.0), variables, x), y, what, rtol=1e-6, atol=1e-6)
        y_train, fresh, _ = _apply(spec, x, True)
        b = shape[0]
        for i in range(b):
            rest = jnp.concatenate([x[:i], x[i + 1 :]])
            _, _, others = _apply(spec, rest, True, fresh, config=dataclasses.replace(CONFIG, momentum=0.0))
            y_eval = jax.jit(evaluate)(jnp.float32(1 / b), {**fresh, **others}, x)
            _close(y_eval[i], y_train[i], f"{spec.name} on {shape}: with {EXAMPLE_WEIGHT} = 1/B and running "
                   f"statistics of the rest of the batch, eval mode does not normalize example {i} as train mode "
                   "does on the whole batch")  # fmt: skip


def finite_in_hard_cases(spec: NormSpec):
    """Finite outputs and gradients for bfloat16 inputs, constant inputs (zero variance) and a batch of one."""
    cases = {
        "bfloat16": _inputs(SHAPES[1], dtype=jnp.bfloat16),
        "constant": jnp.full(SHAPES[1], 3.0),
        "batch of one": _inputs((1, 3, 3, 4)),
    }
    for name, x in cases.items():
        module = spec.make(CONFIG, WHOLE_BATCH)(True)
        variables = module.init(jax.random.PRNGKey(0), x)

        def loss(v, x, module=module):
            return jnp.sum(module.apply(v, x, mutable=["batch_stats"])[0].astype(jnp.float32) ** 2)

        value, grads = jax.value_and_grad(loss, argnums=(0, 1))(variables, x)
        finite = all(bool(jnp.all(jnp.isfinite(g))) for g in [value, *jax.tree.leaves(grads)])
        assert finite, f"{spec.name}: non-finite output or gradient ({name})"


CHECKS = (
    keeps_shape_and_dtype,
    running_stats_as_declared,
    batch_dependence_as_declared,
    scale_invariance_as_declared,
    train_equals_eval_without_batch_statistics,
    jit_equals_eager,
    vmap_over_models_equals_a_loop,
    ghost_groups_are_separate_batches,
    synced_devices_are_one_batch,
    traced_epsilon_and_momentum,
    example_weighting_as_declared,
    finite_in_hard_cases,
)
