"""`rms`: Root Mean Square Layer Normalization (Zhang & Sennrich, 2019).

Each example is rescaled by the root mean square over all of its non-batch axes, with no centering and no
bias: y = gamma * x / sqrt(mean(x^2) + eps), gamma per channel (1 at start). Being LayerNorm without the mean,
it keeps LayerNorm's invariance to scaling its input but not to shifting it.
"""

import flax.linen as nn
import jax.numpy as jnp

from normbench.norms.registry import NormSpec


class RMSNorm(nn.Module):
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        # Squares of bfloat16 values lose too much precision when summed over a whole feature map: at least
        # float32, float64 for float64 input.
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        mean_square = jnp.mean(xf * xf, axis=tuple(range(1, x.ndim)), keepdims=True)
        return (xf / jnp.sqrt(mean_square + self.epsilon) * scale).astype(x.dtype)


def make(config, stats):
    return lambda train: RMSNorm(epsilon=config.epsilon)


SPEC = NormSpec(
    name="rms",
    make=make,
    batch_dependent=False,
    running_stats=False,
    summary="RMSNorm: each example divided by its root mean square over all non-batch axes; gamma, no beta",
    reduces_over="all non-batch axes",
    options=("epsilon",),
    fuses_activation=False,
    scale_invariant=True,
)
