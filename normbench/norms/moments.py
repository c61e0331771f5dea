"""Batch moments: the one place a batch-dependent norm forms its batch statistics, so that every such norm gets
the ghost and sync protocols (`normbench.norms.registry.BatchStats`) by calling it.

`batch_moments(x, group_size, axis_name)` gives the mean and biased variance per channel over the examples
(axis 0) and spatial axes of x (channels last):

- with `group_size`, per group of that many consecutive examples (ghost batches). The size may be traced, so a
  sweep vmaps it instead of compiling one program per size: groups come from a (B, B) example-to-group
  indicator rather than a reshape whose shape would depend on it. The running averages move toward the mean
  over groups of the group statistics.
- with `axis_name`, averaged over the devices of that mesh axis (SyncBN), each device holding as many examples
  as every other; with groups too, group i of every device forms one statistic.

The variance is two-pass, the mean of squared deviations: the one-pass E[x^2] - E[x]^2 loses the tiny variances
of small-init layers to cancellation. Statistics are float32 even for bfloat16 input, and float64 for float64.
`count` is the number of values each statistic is taken over (examples of the group or batch, times the spatial
positions, times the devices); `running_var_target` turns the biased running variance into the unbiased one.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class BatchMoments(NamedTuple):
    # Broadcastable to x: the statistics each example is normalized with.
    mean: jax.Array
    var: jax.Array
    # (channels,): what the running averages move toward.
    running_mean: jax.Array
    running_var: jax.Array
    # Values per statistic, n: the biased variance divides by n.
    count: Any


def running_var_target(moments: BatchMoments, unbiased: bool):
    """What a running variance moves toward: the biased batch variance (Flax, the textbook), or with `unbiased`
    n / (n - 1) times it (PyTorch), n the values per statistic (for n = 1 the variance is 0 either way)."""
    if not unbiased:
        return moments.running_var
    return moments.running_var * moments.count / jnp.maximum(moments.count - 1, 1)


def batch_moments(x, group_size: Any = None, axis_name: str | None = None) -> BatchMoments:
    b, channels = x.shape[0], x.shape[-1]
    flat = x.reshape(b, -1, channels).astype(jnp.promote_types(x.dtype, jnp.float32))
    if group_size is None:
        mean = _device_mean(flat.mean((0, 1)), axis_name)
        var = _device_mean(jnp.square(flat - mean).mean((0, 1)), axis_name)
        return BatchMoments(mean, var, mean, var, b * flat.shape[1] * _devices(axis_name))

    # A traced size cannot be checked here; a static one that leaves a ragged last group would silently
    # normalize those examples over fewer.
    if isinstance(group_size, int) and b % group_size:
        raise ValueError(f"batch moments: a group size of {group_size} does not divide the batch of {b}")
    member = (jnp.arange(b)[:, None] // group_size == jnp.arange(b)[None, :]).astype(flat.dtype)  # (example, group)
    count = member.sum(0) * flat.shape[1]  # per group; groups past B / g stay empty
    safe = jnp.maximum(count, 1.0)[:, None]
    group_mean = _device_mean(jnp.einsum("bg,bsc->gc", member, flat) / safe, axis_name)
    centered = flat - (member @ group_mean)[:, None, :]
    group_var = _device_mean(jnp.einsum("bg,bsc->gc", member, centered * centered) / safe, axis_name)
    used = (count > 0).astype(flat.dtype)[:, None]
    per_example = (b,) + (1,) * (x.ndim - 2) + (channels,)
    return BatchMoments(
        (member @ group_mean).reshape(per_example),
        (member @ group_var).reshape(per_example),
        (group_mean * used).sum(0) / used.sum(),
        (group_var * used).sum(0) / used.sum(),
        group_size * flat.shape[1] * _devices(axis_name),
    )


def _devices(axis_name):
    return 1 if axis_name is None else jax.lax.psum(1, axis_name)


def _device_mean(statistic, axis_name):
    # Every device holds as many examples, so the mean of the devices' statistics is the statistic of them all.
    return statistic if axis_name is None else jax.lax.pmean(statistic, axis_name)
