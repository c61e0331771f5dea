"""`instance`: Instance Normalization (Ulyanov, Vedaldi & Lempitsky, 2016).

Each example and channel is normalized over its own spatial axes,
y = gamma_c (x_nhwc - mu_nc) / sqrt(sigma_nc^2 + eps) + beta_c, with mu_nc and the biased sigma_nc^2 taken over
H and W, and a per-channel gamma, beta. This is GroupNorm with one channel per group. An (N, C) input (an MLP
layer) has no spatial axes, so every statistic is of one value: x - mu = 0 and the layer outputs beta alone,
cutting the signal. That is the definition applied where it has nothing to normalize over, kept rather than
rejected so that a sweep over models can still include it; expect MLPs with it not to learn.
"""

import flax.linen as nn

from normbench.norms.registry import NormSpec


class InstanceNorm(nn.GroupNorm):
    num_groups: int | None = None
    group_size: int | None = 1


def make(config, stats):
    return lambda train: InstanceNorm(epsilon=config.epsilon, use_fast_variance=False)


SPEC = NormSpec(
    name="instance",
    make=make,
    batch_dependent=False,
    running_stats=False,
    summary="InstanceNorm over the spatial axes of each example and channel (MLP layers: outputs beta)",
    reduces_over="spatial",
    options=("epsilon",),
    fuses_activation=False,
    scale_invariant=True,
)
