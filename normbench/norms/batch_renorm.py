"""`batch_renorm`: Batch Renormalization (Ioffe, 2017).

Train mode, with mu_B and the biased sigma_B^2 = var_B over the batch (and spatial axes), the running averages
mu and var, sigma_B = sqrt(var_B + eps) and sigma = sqrt(var + eps):

    r = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))
    d = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))
    x_hat = (x - mu_B) / sigma_B * r + d,    y = gamma x_hat + beta,

then mu and var move toward mu_B and var_B as in BatchNorm (running = momentum * running + (1 - momentum) *
batch). Eval mode is BatchNorm on the running averages. r and d correct the batch statistics toward the running
ones, so training sees the normalization that eval will apply; while r_max = 1 and d_max = 0 they are exactly
1 and 0 and this is BatchNorm. As in the paper, the limits are held there for `norm.renorm_hold_steps` train
steps (the running averages are still poor), then move linearly to `norm.renorm_r_max`, `norm.renorm_d_max`
over `norm.renorm_ramp_steps`; the count of train steps taken is the `steps` variable of `batch_stats`.
The batch moments come from `normbench.norms.moments`: under the ghost protocol each group of examples is
renormalized with its own mu_B and sigma_B (and the running averages move toward their mean over groups), under
the sync protocol mu_B and sigma_B are the whole batch's across devices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from normbench.config import ConfigError, NormConfig
from normbench.norms.ghost_batch import RUNNING_OPTIONS, check_running_var_init
from normbench.norms.moments import batch_moments, running_var_target
from normbench.norms.registry import WHOLE_BATCH, BatchStats, NormSpec


def renorm_limits(step, config):
    """(r_max, d_max) for the train step `step` (0 for the first): held at (1, 0), then ramped linearly."""
    hold, ramp = config.renorm_hold_steps, config.renorm_ramp_steps
    progress = jnp.asarray(step, jnp.float32) - hold
    t = jnp.clip(progress / ramp, 0.0, 1.0) if ramp else (progress >= 0).astype(jnp.float32)
    return 1.0 + t * (config.renorm_r_max - 1.0), t * config.renorm_d_max


class BatchRenorm(nn.Module):
    use_running_average: bool
    config: NormConfig  # momentum, epsilon and the renorm_* schedule
    stats: BatchStats = WHOLE_BATCH

    @nn.compact
    def __call__(self, x):
        channels, eps, m = x.shape[-1], self.config.epsilon, self.config.momentum
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,))
        check_running_var_init("BatchRenorm", self.config.running_var_init)
        ra_var = self.variable("batch_stats", "var", lambda: self.config.running_var_init * jnp.ones((channels,)))
        # float32, not int32: jax.grad over all variables (as normbench.conformance takes it) rejects int
        # leaves. Counting stays exact up to 2^24 steps, far past any schedule.
        steps = self.variable("batch_stats", "steps", jnp.zeros, (), jnp.float32)
        if self.use_running_average:
            y = (x - ra_mean.value) / jnp.sqrt(ra_var.value + eps)
            return (y * scale + bias).astype(x.dtype)

        moments = batch_moments(x, self.stats.group_size, self.stats.axis_name)
        mean, centered = moments.mean, x.astype(moments.mean.dtype) - moments.mean
        sigma_batch, sigma = jnp.sqrt(moments.var + eps), jnp.sqrt(ra_var.value + eps)

        r_max, d_max = renorm_limits(steps.value, self.config)
        # The gradient treats r and d as constants (the paper's stop_gradient): it flows through mu_B and
        # sigma_B alone, as in BatchNorm.
        r = jax.lax.stop_gradient(jnp.clip(sigma_batch / sigma, 1.0 / r_max, r_max))
        d = jax.lax.stop_gradient(jnp.clip((mean - ra_mean.value) / sigma, -d_max, d_max))
        y = centered / sigma_batch * r + d

        if not self.is_initializing():
            ra_mean.value = m * ra_mean.value + (1 - m) * moments.running_mean
            ra_var.value = m * ra_var.value + (1 - m) * running_var_target(moments, self.config.unbiased_running_var)
            steps.value = steps.value + 1
        return (y * scale + bias).astype(x.dtype)


def check(config, channels):
    if config.renorm_r_max < 1 or config.renorm_d_max < 0:
        raise ConfigError(
            f"batch_renorm: norm.renorm_r_max must be >= 1 and norm.renorm_d_max >= 0, "
            f"got {config.renorm_r_max} and {config.renorm_d_max}"
        )
    if config.renorm_hold_steps < 0 or config.renorm_ramp_steps < 0:
        raise ConfigError(
            f"batch_renorm: norm.renorm_hold_steps and norm.renorm_ramp_steps must be >= 0, "
            f"got {config.renorm_hold_steps} and {config.renorm_ramp_steps}"
        )


def make(config, stats):
    return lambda train: BatchRenorm(not train, config, stats)


SPEC = NormSpec(
    name="batch_renorm",
    make=make,
    batch_dependent=True,
    running_stats=True,
    summary="Batch Renormalization: BatchNorm corrected toward its running averages by clipped r, d",
    reduces_over="batch, spatial",
    options=(*RUNNING_OPTIONS, "renorm_r_max", "renorm_d_max", "renorm_hold_steps", "renorm_ramp_steps"),
    fuses_activation=False,
    scale_invariant=True,
    check=check,
)
