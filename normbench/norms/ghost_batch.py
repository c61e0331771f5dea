"""Ghost BatchNorm (Hoffer, Hubara & Soudry, 2017): BatchNorm whose statistics come from groups of g examples.

The batch of B examples is split into B / g consecutive groups; each example is normalized with its group's
mean and biased variance over the group's examples (and spatial axes), y = gamma x_hat + beta. The running
averages move toward the mean over groups of the group statistics: running = momentum * running + (1 - momentum)
* statistic, from mean 0 and variance `norm.running_var_init`, the variance biased or (`norm.unbiased_running_var`)
times n / (n - 1), n = g x spatial positions. With g = B this is BatchNorm (`normbench.norms.batch`). The
moments come from `normbench.norms.moments`, so g may be traced and `axis_name` synchronizes them across devices.

Eval mode normalizes with the running averages mu and var, or with `norm.inference_example_weight` = alpha > 0
each example with its inference example weighting (Summers & Dinneen, 2020, "Four Things Everyone Should Know to
Improve Batch Normalization", ICLR; `example_weighted`), which `batch_renorm`'s eval mode shares.

`SPEC` registers it as the norm `ghost_batch`: g is the protocol's `BatchStats.group_size` when it sets one,
else `norm.ghost_size` (None: g = B, BatchNorm). The `batch` norm uses it under the ghost protocol.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from normbench.config import ConfigError
from normbench.norms.moments import batch_moments, running_var_target
from normbench.norms.registry import EXAMPLE_WEIGHT, NormSpec


def example_weighted(x, mean, sigma, epsilon, weight):
    """Summers & Dinneen's inference example weighting: (mu_i, sigma_i), broadcastable to x (channels last), for
    normalizing each example i by statistics that give its own moments the weight alpha = `weight` (in training
    it is 1/B of the batch statistic it sees) and the population's 1 - alpha:

        mu_i = alpha m_i + (1 - alpha) mu,    sigma_i^2 = alpha E_i[x^2] + (1 - alpha) (var + mu^2) - mu_i^2,

    m_i and E_i the means over the example's own positions (spatial axes, tokens; for an (N, C) input its one
    value, so its own variance s_i is 0), mu and var the running averages, `sigma` = sqrt(var + eps). Computed as
    the same sigma_i^2 = (1 - alpha) var + alpha s_i + alpha (1 - alpha) (m_i - mu)^2, two-pass, without the
    cancellation of E[x^2] - mu^2, and relative to sigma: sigma_i = sigma sqrt(1 + alpha ((s_i + eps) / sigma^2 - 1
    + (1 - alpha) (m_i - mu)^2 / sigma^2)), which at alpha = 0 (traced too) is mu and sigma to the bit.

    With alpha = 1/B and running averages that are the statistics of the other B - 1 examples of a batch (the
    biased variance), mu_i and sigma_i are that whole batch's: eval mode then normalizes example i as train mode
    does (`normbench.conformance.example_weighting_as_declared` checks it)."""
    b, channels = x.shape[0], x.shape[-1]
    flat = x.reshape(b, -1, channels).astype(jnp.promote_types(x.dtype, jnp.float32))
    own_mean = flat.mean(1)
    own_var = jnp.square(flat - own_mean[:, None, :]).mean(1)
    shift = own_mean - mean
    sigma2 = jnp.square(sigma)
    widening = (own_var + epsilon) / sigma2 - 1 + (1 - weight) * jnp.square(shift) / sigma2
    per_example = (b,) + (1,) * (x.ndim - 2) + (channels,)
    mixed_mean = (mean + weight * shift).reshape(per_example)
    return mixed_mean, (sigma * jnp.sqrt(1 + weight * widening)).reshape(per_example)


def unweighted(weight) -> bool:
    """A config's alpha fixed at 0 (not traced): eval mode then skips the weighting's arithmetic altogether."""
    return isinstance(weight, int | float) and weight == 0


def check_example_weight(config, channels):
    """alpha is a share of the statistics: in [0, 1] (a traced one is left to the config's checks)."""
    weight = config.inference_example_weight
    if isinstance(weight, int | float) and not 0 <= weight <= 1:
        raise ConfigError(f"norm.inference_example_weight must be in [0, 1], got {weight}")


def check_running_var_init(name, value):
    """A concrete running_var_init must be >= 0 (a traced one, a value axis, is checked by the config's checks)."""
    if isinstance(value, int | float) and not value >= 0:
        raise ConfigError(f"{name}: norm.running_var_init must be >= 0, got {value}")


class GhostBatchNorm(nn.Module):
    group_size: Any  # int, traced int32 scalar, or None for the whole batch; must divide the batch
    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-6
    axis_name: str | None = None
    running_var_init: Any = 1.0  # float or traced scalar
    unbiased_running_var: bool = False
    example_weight: Any = 0.0  # eval mode's alpha (`example_weighted`); float or traced scalar

    @nn.compact
    def __call__(self, x):
        name = type(self).__name__
        if isinstance(self.group_size, int) and self.group_size < 1:
            raise ConfigError(f"{name}: the group size (norm.ghost_size) must be at least 1, got {self.group_size}")
        check_running_var_init(name, self.running_var_init)
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,))
        ra_var = self.variable("batch_stats", "var", lambda: self.running_var_init * jnp.ones((channels,)))
        if self.use_running_average:
            if unweighted(self.example_weight):
                return (x - ra_mean.value) / jnp.sqrt(ra_var.value + self.epsilon) * scale + bias
            sigma = jnp.sqrt(ra_var.value + self.epsilon)
            mean, sigma = example_weighted(x, ra_mean.value, sigma, self.epsilon, self.example_weight)
            return (x - mean) / sigma * scale + bias

        moments = batch_moments(x, self.group_size, self.axis_name)
        y = (x.astype(moments.mean.dtype) - moments.mean) / jnp.sqrt(moments.var + self.epsilon)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * moments.running_mean
            ra_var.value = m * ra_var.value + (1 - m) * running_var_target(moments, self.unbiased_running_var)
        return (y * scale + bias).astype(x.dtype)


def check(config, channels):
    if config.ghost_size is not None and config.ghost_size < 1:
        raise ConfigError(f"ghost_batch: norm.ghost_size must be at least 1 (or none), got {config.ghost_size}")
    check_example_weight(config, channels)


def check_batch(config, batch):
    """Ghost groups must tile each batch exactly."""
    if config.ghost_size is not None and batch % config.ghost_size:
        raise ConfigError(f"norm.ghost_size {config.ghost_size} does not divide sweep.batch_sizes ({batch})")


def module(cls, group_size, train, config, stats):
    """`cls` (GhostBatchNorm or a subclass) with the config's options."""
    return cls(
        group_size,
        not train,
        config.momentum,
        config.epsilon,
        stats.axis_name,
        config.running_var_init,
        config.unbiased_running_var,
        config.inference_example_weight,
    )


def make(config, stats):
    group_size = config.ghost_size if stats.group_size is None else stats.group_size
    return lambda train: module(GhostBatchNorm, group_size, train, config, stats)


# The running-statistics options every BatchNorm-like norm reads.
RUNNING_OPTIONS = ("momentum", "epsilon", "running_var_init", "unbiased_running_var")

SPEC = NormSpec(
    name="ghost_batch",
    make=make,
    batch_dependent=True,
    running_stats=True,
    summary="Ghost BatchNorm: BatchNorm over groups of norm.ghost_size examples; running averages for eval",
    reduces_over="ghost batch, spatial",
    options=("ghost_size", *RUNNING_OPTIONS, EXAMPLE_WEIGHT),
    fuses_activation=False,
    scale_invariant=True,
    check=check,
    check_batch=check_batch,
)
