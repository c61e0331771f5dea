"""Ghost BatchNorm (Hoffer, Hubara & Soudry, 2017): BatchNorm whose statistics come from groups of g examples.

The batch of B examples is split into B / g consecutive groups; each example is normalized with its group's
mean and biased variance over the group's examples (and spatial axes), y = gamma x_hat + beta. The running
averages move toward the mean over groups of the group statistics. With g = B this is BatchNorm.

`group_size` may be a traced value, so a sweep vmaps g instead of compiling one program per size: groups are
formed with a (B, B) example-to-group indicator instead of a reshape whose shape would depend on g. An optional
mask (real examples of a padded batch) removes examples from every statistic.

`SPEC` registers it as the norm `ghost_batch`, with a static g = `norm.ghost_size` (None: g = B, BatchNorm).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from normbench.config import ConfigError
from normbench.norms.registry import NormSpec


class GhostBatchNorm(nn.Module):
    group_size: Any  # int, traced int32 scalar, or None for the whole batch; must divide the batch
    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x, mask=None):
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,))
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,))
        if self.use_running_average:
            return (x - ra_mean.value) / jnp.sqrt(ra_var.value + self.epsilon) * scale + bias

        b = x.shape[0]
        group_size = b if self.group_size is None else self.group_size
        # A traced size cannot be checked here; a static one that leaves a ragged last group would silently
        # normalize those examples over fewer.
        if isinstance(group_size, int) and b % group_size:
            raise ValueError(f"ghost batch norm: a group size of {group_size} does not divide the batch of {b}")
        flat = x.reshape(b, -1, channels).astype(jnp.float32)
        member = jnp.arange(b)[:, None] // group_size == jnp.arange(b)[None, :]  # (example, group)
        weight = member.astype(jnp.float32)
        if mask is not None:
            weight = weight * mask.reshape(b, 1)
        count = weight.sum(0) * flat.shape[1]  # per group; groups past B / g stay empty
        safe = jnp.maximum(count, 1.0)[:, None]
        group_mean = jnp.einsum("bg,bsc->gc", weight, flat) / safe
        centered = flat - (member @ group_mean)[:, None, :]
        group_var = jnp.einsum("bg,bsc->gc", weight, centered * centered) / safe
        y = centered / jnp.sqrt((member @ group_var)[:, None, :] + self.epsilon)

        if not self.is_initializing():
            used = (count > 0).astype(jnp.float32)[:, None]
            n_groups = used.sum()
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * (group_mean * used).sum(0) / n_groups
            ra_var.value = m * ra_var.value + (1 - m) * (group_var * used).sum(0) / n_groups
        return (y.reshape(x.shape) * scale + bias).astype(x.dtype)


def check(config, channels):
    if config.ghost_size is not None and config.ghost_size < 1:
        raise ConfigError(f"ghost_batch: norm.ghost_size must be at least 1 (or none), got {config.ghost_size}")


def make_grouped(config, group_size):
    """Ghost BN over groups of `group_size` examples: `batch` and `ghost_batch` under the ghost protocol."""

    def factory(train):
        return GhostBatchNorm(group_size, not train, config.momentum, config.epsilon)

    return factory


def make(config):
    return make_grouped(config, config.ghost_size)


SPEC = NormSpec(
    name="ghost_batch",
    make=make,
    batch_dependent=True,
    running_stats=True,
    summary="Ghost BatchNorm: BatchNorm over groups of norm.ghost_size examples; running averages for eval",
    reduces_over="ghost batch, spatial",
    options=("ghost_size", "momentum", "epsilon"),
    fuses_activation=False,
    scale_invariant=True,
    check=check,
    make_grouped=make_grouped,
)
