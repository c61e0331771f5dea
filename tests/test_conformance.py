"""Every registered norm against the conformance checks, and proof that the checks catch a broken norm."""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import pytest

from normbench.conformance import CHECKS, batch_dependence_as_declared
from normbench.norms import NORMS


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
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
