"""`none`: the un-normalized baseline, with the same call convention as every other norm."""

import flax.linen as nn

from normbench.norms.registry import NormSpec


class Identity(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x


SPEC = NormSpec(
    name="none",
    make=lambda config, stats: lambda train: Identity(),
    batch_dependent=False,
    running_stats=False,
    summary="no normalization",
)
