"""`layer`: Layer Normalization (Ba, Kiros & Hinton, 2016).

Each example is normalized over all of its non-batch axes (the features of an MLP layer; H, W and C of a conv
layer, as in the Group Normalization paper's comparison), with a per-channel gamma and beta:
y = gamma (x - mu) / sqrt(sigma^2 + eps) + beta, sigma^2 biased.
"""

import flax.linen as nn

from normbench.norms.registry import NormSpec


class LayerNorm(nn.GroupNorm):
    """GroupNorm with one group is LayerNorm over every non-batch axis; this names it so in params."""

    num_groups: int | None = 1


def make(config, stats):
    return lambda train: LayerNorm(epsilon=config.epsilon, use_fast_variance=False)


SPEC = NormSpec(
    name="layer",
    make=make,
    batch_dependent=False,
    running_stats=False,
    summary="LayerNorm over all non-batch axes of each example",
    reduces_over="spatial, channels (per example)",
    options=("epsilon",),
    scale_invariant=True,
)
