"""`frn`: Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, 2020).

Per example and channel, nu^2 = mean(x^2) over the spatial axes, x_hat = x / sqrt(nu^2 + eps), and the TLU
y = max(gamma x_hat + beta, tau) with learned per-channel gamma (1), beta (0) and tau (0). There is no mean
subtraction, so the learned threshold tau, not a zero mean, decides which responses pass. An (N, C) input
is read as (N, 1, 1, C), the paper's fully connected case: nu^2 = x^2, so x_hat = x / sqrt(x^2 + eps) is close
to sign(x) unless eps is comparable to x^2 (the paper learns eps there; here it is `norm.epsilon`).
"""

import flax.linen as nn
import jax.numpy as jnp

from normbench.norms.registry import NormSpec


class FilterResponseNorm(nn.Module):
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        tau = self.param("tau", nn.initializers.zeros, (channels,))
        spatial = tuple(range(1, x.ndim - 1))
        nu2 = jnp.mean(jnp.square(x), axis=spatial, keepdims=True)
        return jnp.maximum(x / jnp.sqrt(nu2 + self.epsilon) * scale + bias, tau)


def make(config, stats):
    def factory(train):
        return FilterResponseNorm(config.epsilon)

    return factory


SPEC = NormSpec(
    name="frn",
    make=make,
    batch_dependent=False,
    running_stats=False,
    summary="Filter Response Normalization with its TLU: x / RMS over space, then max(gamma x + beta, tau)",
    reduces_over="spatial (per example and channel)",
    options=("epsilon",),
    fuses_activation=True,
    scale_invariant=True,
)
