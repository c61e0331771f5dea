"""`evonorm_b0` and `evonorm_s0`: EvoNorm normalization-activation layers (Liu, Brock, Simonyan & Le, 2020,
"Evolving Normalization-Activation Layers").

B0: y = x / max(sqrt(s_b^2(x) + eps), v1 x + sqrt(s_i^2(x) + eps)) * gamma + beta, where s_b^2 is the biased
variance over (N, H, W) per channel and s_i^2 the variance over (H, W) per example and channel. Train mode
uses this batch's s_b^2 (from `normbench.norms.moments`, so per ghost group or across devices as the protocol
asks) and moves running = momentum * running + (1 - momentum) * s_b^2 in `batch_stats` (from
`norm.running_var_init`; s_b^2 times n / (n - 1) with `norm.unbiased_running_var`, as BatchNorm's); eval mode
uses the running variance in its place.

S0: y = x sigmoid(v1 x) / sqrt(s_g^2(x) + eps) * gamma + beta, where s_g^2 is the variance over (H, W) and the
channels of one group, per example; groups are set as for `group` (`norm.num_groups` or `norm.group_size`,
32 groups by default).

v1, gamma start at 1 and beta at 0, per channel. An (N, C) input is read as (N, 1, 1, C), so s_i^2 = 0. The
max (B0) and the sigmoid gate (S0) are the layers' nonlinearity, so models add no activation after them.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from normbench.norms import group
from normbench.norms.ghost_batch import RUNNING_OPTIONS, check_running_var_init
from normbench.norms.moments import batch_moments, running_var_target
from normbench.norms.registry import WHOLE_BATCH, BatchStats, NormSpec


def _variance(x, axes):
    # Two-pass, as in batch.py: E[x^2] - E[x]^2 cancels away the tiny variances of small-init layers.
    return jnp.mean(jnp.square(x - jnp.mean(x, axis=axes, keepdims=True)), axis=axes, keepdims=True)


class EvoNormB0(nn.Module):
    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-6
    stats: BatchStats = WHOLE_BATCH
    running_var_init: Any = 1.0  # float or traced scalar
    unbiased_running_var: bool = False

    @nn.compact
    def __call__(self, x):
        check_running_var_init("EvoNormB0", self.running_var_init)
        channels = x.shape[-1]
        v1 = self.param("v1", nn.initializers.ones, (channels,))
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        ra_var = self.variable("batch_stats", "var", lambda: self.running_var_init * jnp.ones((channels,)))
        if self.use_running_average:
            batch_var = ra_var.value
        else:
            moments = batch_moments(x, self.stats.group_size, self.stats.axis_name)
            batch_var = moments.var
            if not self.is_initializing():
                target = running_var_target(moments, self.unbiased_running_var)
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * target
        instance_var = _variance(x, tuple(range(1, x.ndim - 1)))
        denominator = jnp.maximum(jnp.sqrt(batch_var + self.epsilon), v1 * x + jnp.sqrt(instance_var + self.epsilon))
        return x / denominator * scale + bias


class EvoNormS0(nn.Module):
    num_groups: int | None = None
    group_size: int | None = None
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        # Used directly, outside the config's checks: groups that do not tile the channels are an error, not a
        # silent reshape failure or a division by zero.
        group.check_groups("evonorm_s0", self.num_groups, self.group_size, channels)
        v1 = self.param("v1", nn.initializers.ones, (channels,))
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        size = self.group_size or channels // self.num_groups
        grouped = x.reshape(x.shape[:-1] + (channels // size, size))
        group_var = _variance(grouped, tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,))
        x_hat = (grouped / jnp.sqrt(group_var + self.epsilon)).reshape(x.shape)
        return x_hat * nn.sigmoid(v1 * x) * scale + bias


def make_b0(config, stats):
    def factory(train):
        return EvoNormB0(
            not train, config.momentum, config.epsilon, stats, config.running_var_init, config.unbiased_running_var
        )

    return factory


def make_s0(config, stats):
    def factory(train):
        return EvoNormS0(
            **group.group_options(config),
            epsilon=config.epsilon,
        )

    return factory


SPEC_B0 = NormSpec(
    name="evonorm_b0",
    make=make_b0,
    batch_dependent=True,
    running_stats=True,
    summary="EvoNorm-B0: x / max(batch std, v1 x + instance std), affine; running variance for eval",
    reduces_over="batch, spatial (and spatial per example)",
    options=RUNNING_OPTIONS,
    fuses_activation=True,
    scale_invariant=True,
)

SPEC_S0 = NormSpec(
    name="evonorm_s0",
    make=make_s0,
    batch_dependent=False,
    running_stats=False,
    summary="EvoNorm-S0: x sigmoid(v1 x) / group std, affine (groups as in GroupNorm)",
    reduces_over="spatial, channel group (per example)",
    options=("num_groups", "group_size", "epsilon"),
    fuses_activation=True,
    # The sigmoid sees v1 x, so scaling x changes its gate.
    scale_invariant=False,
    check=functools.partial(group.check, name="evonorm_s0"),
)
