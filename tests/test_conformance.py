"""Every registered norm against the conformance checks, and proof that the checks catch a broken norm."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from normbench.conformance import (
    CHECKS,
    CONFIG,
    batch_dependence_as_declared,
    example_weighting_as_declared,
    finite_in_hard_cases,
    ghost_groups_are_separate_batches,
    synced_devices_are_one_batch,
)
from normbench.norms import NORMS, WHOLE_BATCH
from normbench.norms.ghost_batch import RUNNING_OPTIONS
from normbench.norms.registry import BatchStats

# bfloat16, zero variance and batch 1 with gradients cost a second per norm: the full suite runs them.
SLOW_CHECKS = {finite_in_hard_cases}


@pytest.mark.parametrize(
    "check",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CHECKS else c for c in CHECKS],
    ids=lambda c: c.__name__,
)
@pytest.mark.parametrize("name", list(NORMS))
def test_norm_conforms(name, check):
    check(NORMS[name])


class LeakyNorm(nn.Module):
    """Normalizes by the whole batch's standard deviation: it depends on the batch, whatever it claims."""

    @nn.compact
    def __call__(self, x):
        return (x - x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)) / (x.std() + 1e-5)


def test_a_norm_leaking_batch_statistics_while_claiming_independence_fails():
    leaky = dataclasses.replace(
        NORMS["layer"], name="leaky", make=lambda config, stats: lambda train: LeakyNorm(), batch_dependent=False
    )
    with pytest.raises(AssertionError, match="claims batch_dependent=False"):
        batch_dependence_as_declared(leaky)


def ignoring_its_batch_stats(name):
    """`name` as a norm that always takes its statistics over its own whole batch, whatever the protocol asks."""
    return dataclasses.replace(NORMS[name], make=lambda config, stats: NORMS[name].make(config, WHOLE_BATCH))


@pytest.mark.parametrize("name", ["batch", "evonorm_b0"])
def test_a_norm_ignoring_the_group_size_fails(name):
    with pytest.raises(AssertionError, match="not the norm of each group alone"):
        ghost_groups_are_separate_batches(ignoring_its_batch_stats(name))


@pytest.mark.parametrize("name", ["batch", "batch_renorm"])
def test_a_norm_ignoring_the_device_axis_fails(name):
    with pytest.raises(AssertionError, match="output is not the whole batch's"):
        synced_devices_are_one_batch(ignoring_its_batch_stats(name))


@pytest.mark.parametrize("name", ["batch", "batch_renorm"])
def test_a_norm_declaring_example_weighting_but_ignoring_it_fails(name):
    unweighted = dataclasses.replace(
        NORMS[name],
        make=lambda config, stats: NORMS[name].make(dataclasses.replace(config, inference_example_weight=0.0), stats),
    )
    with pytest.raises(AssertionError, match="eval mode does not normalize example 0 as train mode does"):
        example_weighting_as_declared(unweighted)


def test_a_norm_weighting_examples_without_declaring_it_fails():
    undeclared = dataclasses.replace(NORMS["batch"], options=RUNNING_OPTIONS)
    with pytest.raises(AssertionError, match="which its options do not list"):
        example_weighting_as_declared(undeclared)


# The norms whose running `var` is the running average of their input's batch variance (batch_renorm keeps a
# running sigma, evonorm_b0 the variance of its own statistic, batch+ws that of a weight-standardized product).
UNBIASED_VARIANCE_OF_THE_INPUT = ["batch", "ghost_batch"]


@pytest.mark.parametrize("name", UNBIASED_VARIANCE_OF_THE_INPUT)
def test_synced_unbiased_running_variance_divides_by_every_devices_count_less_one(name):
    """SyncBN with `norm.unbiased_running_var`: each device's running variance moves toward the unbiased variance
    (NumPy float64, ddof=1) of all the devices' examples and positions together, so m x before + (1 - m) x
    var(ddof=1) of the whole batch on every device, not n / (n - 1) with n one device's share."""
    config = dataclasses.replace(CONFIG, unbiased_running_var=True)
    module = NORMS[name].make(config, BatchStats(axis_name="devices"))(True)
    on_devices = jax.vmap(
        lambda variables, x: module.apply(variables, x, mutable=["batch_stats"])[1], (None, 0), axis_name="devices"
    )
    rng = np.random.default_rng(0)
    for shape in ((6, 4), (6, 3, 3, 4)):
        x = rng.normal(1.5, 2.0, shape).astype(np.float32)
        before = NORMS[name].make(config, WHOLE_BATCH)(True).init(jax.random.PRNGKey(0), x)
        before = {**before, "batch_stats": {**before["batch_stats"], "var": np.float32(rng.uniform(0.5, 2.0, 4))}}
        whole = np.float64(x).reshape(-1, 4)
        expected = config.momentum * np.float64(before["batch_stats"]["var"]) + (1 - config.momentum) * whole.var(
            0, ddof=1
        )
        for devices in (2, 3):
            got = on_devices(before, x.reshape(devices, -1, *shape[1:]))["batch_stats"]["var"]
            for d in range(devices):
                np.testing.assert_allclose(got[d], expected, rtol=1e-5, err_msg=f"{name}, {devices} devices on {shape}")
