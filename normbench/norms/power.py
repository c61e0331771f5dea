"""`power`: PowerNorm (Shen et al., 2020, "PowerNorm: Rethinking Batch Normalization in Transformers"), Algorithm 1.

Forward, train and eval alike: y = gamma * x / sqrt(psi^2 + eps) + beta, with psi^2 the *running* quadratic mean
per channel (no mean is subtracted), as it was before this step. Train mode then moves it toward the batch's:
psi^2 <- momentum * psi^2 + (1 - momentum) * mean(x^2), the mean over the examples and positions (batch x tokens
in the ViT), from `norm.running_var_init`. So an example's output never depends on the rest of its batch: the
batch only reaches the running statistics (`batch_dependent` is False; the fluctuations of batch statistics that
Shen et al. blame for BN's trouble in Transformers stay out of the forward pass).

Backward, the paper's approximate gradient: with x_hat = x / sqrt(psi^2 + eps) and g = gamma * dL/dy,
g~ = g - nu * x_hat and dL/dx = g~ / sqrt(psi^2 + eps), nu a running estimate of mean(g * x_hat), the term that
the exact gradient of x / sqrt(mean(x^2)) subtracts with the *batch's* value (with nu = mean(g x_hat) and psi^2
the batch's quadratic mean the two are equal; `tests/test_norm_zoo_b.py` checks it). nu moves in the backward
pass: nu <- nu + (1 - momentum) * mean(g~ * x_hat), from 0. JAX cannot mutate state in a backward pass, so the
custom VJP returns that step as the "gradient" with respect to nu, and the trainer adds the gradient with respect
to `batch_stats` to them after each step for a norm with `backward_stats` (`normbench.core.train.train_step`).

Against the reference code (github.com/sIncerass/powernorm, fairseq/modules/norms/mask_powernorm.py): the same
forward, running statistic and nu update (its `ema_gz` accumulates mean(g~ x_hat) and is used times 1 - alpha_bkw,
which is nu here); one momentum serves both, where the code has alpha_fwd and alpha_bkw (0.9 each). Left out:
its first `warmup_iters` updates normalize by the batch's statistic instead of the running one; its backward
divides by the batch's sqrt(psi_B^2 + eps) where the forward divided by the running one (the paper's Algorithm 1
divides by the running one in both, as here); and its GroupScaling1D, which first divides each token by its
quadratic mean over groups of channels (one group per head), a LayerNorm-like step outside Algorithm 1.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from normbench.norms.ghost_batch import check_running_var_init
from normbench.norms.registry import NormSpec


@jax.custom_vjp
def power_normalize(x, psi2, nu, epsilon, momentum):
    """x / sqrt(psi2 + epsilon), whose backward pass is PowerNorm's approximate one (module docstring)."""
    return x * jax.lax.rsqrt(psi2 + epsilon)


def _forward(x, psi2, nu, epsilon, momentum):
    inverse = jax.lax.rsqrt(psi2 + epsilon)
    x_hat = x * inverse
    return x_hat, (x_hat, inverse, psi2, nu, epsilon, momentum)


def _backward(residuals, g):
    x_hat, inverse, psi2, nu, epsilon, momentum = residuals
    g_tilde = g - nu * x_hat
    gamma_b = jnp.mean(g_tilde * x_hat, axis=tuple(range(x_hat.ndim - 1)))
    nu_step = (1 - momentum) * gamma_b
    zero = jax.tree.map(jnp.zeros_like, (psi2, epsilon, momentum))
    return g_tilde * inverse, zero[0], nu_step.astype(nu.dtype), zero[1], zero[2]


power_normalize.defvjp(_forward, _backward)


class PowerNorm(nn.Module):
    use_running_average: bool
    momentum: Any = 0.9  # float or traced scalar
    epsilon: Any = 1e-6
    running_var_init: Any = 1.0  # psi^2 before the first step

    @nn.compact
    def __call__(self, x):
        check_running_var_init(type(self).__name__, self.running_var_init)
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        psi2 = self.variable("batch_stats", "psi2", lambda: self.running_var_init * jnp.ones((channels,)))
        nu = self.variable("batch_stats", "nu", jnp.zeros, (channels,))
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        xf = x.astype(dtype)
        running = psi2.value.astype(dtype)
        if self.use_running_average:
            x_hat = xf * jax.lax.rsqrt(running + self.epsilon)
        else:
            x_hat = power_normalize(xf, running, nu.value.astype(dtype), self.epsilon, self.momentum)
            if not self.is_initializing():
                batch = jnp.mean(jnp.square(xf), axis=tuple(range(x.ndim - 1)))
                psi2.value = self.momentum * psi2.value + (1 - self.momentum) * batch
        return (x_hat * scale + bias).astype(x.dtype)


def make(config, stats):
    return lambda train: PowerNorm(not train, config.momentum, config.epsilon, config.running_var_init)


SPEC = NormSpec(
    name="power",
    make=make,
    batch_dependent=False,
    running_stats=True,
    summary="PowerNorm: x over its running quadratic mean in train and eval; approximate backward with a running nu",
    reduces_over="batch, spatial (running quadratic mean)",
    options=("momentum", "epsilon", "running_var_init"),
    backward_stats=True,
)
