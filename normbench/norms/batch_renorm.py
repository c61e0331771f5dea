"""`batch_renorm`: Batch Renormalization (Ioffe, 2017).

Train mode, with mu_B and the biased sigma_B^2 = var_B over the batch (and spatial axes), sigma_B =
sqrt(var_B + eps), and the running averages mu and sigma (Algorithm 1 of the paper averages sigma, not the
variance):

    r = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))
    d = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))
    x_hat = (x - mu_B) / sigma_B * r + d,    y = gamma x_hat + beta,

then mu and sigma move toward mu_B and sigma_B (running = momentum * running + (1 - momentum) * batch; sigma from
sqrt(`norm.running_var_init` + eps), and toward sqrt(n / (n - 1) var_B + eps) with `norm.unbiased_running_var`).
Eval mode is y = gamma (x - mu) / sigma + beta, BatchNorm's, so it takes `norm.inference_example_weight` as
BatchNorm does (`normbench.norms.ghost_batch.example_weighted`, the running variance being sigma^2 - eps). r and
d correct the batch statistics toward the running ones, so training sees the normalization that eval will apply;
while r_max = 1 and d_max = 0 they are exactly 1 and 0 and this is BatchNorm (its running sigma aside).

The schedule is in fractions of the run's T train steps (`norm.renorm_train_steps`, which the trainer sets to
train.epochs x steps per epoch of each cell unless the config fixes it): both limits hold at (1, 0) for the first
`renorm_hold_fraction` x T steps, while the running averages are still poor, then r_max moves linearly to
`norm.renorm_r_max` over `renorm_r_ramp_fraction` x T steps and d_max to `norm.renorm_d_max` over
`renorm_d_ramp_fraction` x T. The paper holds for 5k steps, reaches r_max = 3 at 40k and d_max = 5 at 25k; the
default fractions are those over 160k steps. The count of train steps taken is the `steps` variable of
`batch_stats`, which every run (so every cell) starts at 0.

The batch moments come from `normbench.norms.moments`: under the ghost protocol each group of examples is
renormalized with its own mu_B and sigma_B (and the running averages move toward their mean over groups), under
the sync protocol mu_B and sigma_B are the whole batch's across devices. Under per_device, r and d read each
device's own running averages, which move apart within an epoch and are averaged at its end: once r and d are
free, that differs from ghost groups of the same size, whose running averages are one mean.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from normbench.config import ConfigError, NormConfig
from normbench.norms.ghost_batch import (
    RUNNING_OPTIONS,
    check_example_weight,
    check_running_var_init,
    example_weighted,
    unweighted,
)
from normbench.norms.moments import batch_moments
from normbench.norms.registry import EXAMPLE_WEIGHT, WHOLE_BATCH, BatchStats, NormSpec


def _ramp(step, start, length):
    """0 before `start`, 1 from `start + length` on, linear between (a step at `start` when length is 0)."""
    progress = step - start
    return jnp.clip(progress / length, 0.0, 1.0) if length else (progress >= 0).astype(progress.dtype)


def renorm_limits(step, config):
    """(r_max, d_max) for the train step `step` (0 for the first) of a run of `config.renorm_train_steps`."""
    total = config.renorm_train_steps
    if total is None:
        raise ConfigError(
            "batch_renorm: norm.renorm_train_steps is not set; the schedule's fractions need the run's train steps"
        )
    step = jnp.asarray(step, jnp.float32)
    hold = config.renorm_hold_fraction * total
    r = _ramp(step, hold, config.renorm_r_ramp_fraction * total)
    d = _ramp(step, hold, config.renorm_d_ramp_fraction * total)
    return 1.0 + r * (config.renorm_r_max - 1.0), d * config.renorm_d_max


class BatchRenorm(nn.Module):
    use_running_average: bool
    config: NormConfig  # momentum, epsilon, the running-variance options and the renorm_* schedule
    stats: BatchStats = WHOLE_BATCH

    @nn.compact
    def __call__(self, x):
        channels, eps, m = x.shape[-1], self.config.epsilon, self.config.momentum
        check(self.config, channels)
        check_running_var_init("BatchRenorm", self.config.running_var_init)
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,))
        ra_sigma = self.variable(
            "batch_stats", "sigma", lambda: jnp.sqrt(self.config.running_var_init * jnp.ones((channels,)) + eps)
        )
        # float32, not int32: jax.grad over all variables (as normbench.conformance takes it) rejects int
        # leaves. Counting stays exact up to 2^24 steps, far past any schedule.
        steps = self.variable("batch_stats", "steps", jnp.zeros, (), jnp.float32)
        if self.use_running_average:
            mean, sigma = ra_mean.value, ra_sigma.value
            weight = self.config.inference_example_weight
            if not unweighted(weight):
                mean, sigma = example_weighted(x, mean, sigma, eps, weight)
            y = (x - mean) / sigma
            return (y * scale + bias).astype(x.dtype)

        moments = batch_moments(x, self.stats.group_size, self.stats.axis_name)
        mean, centered = moments.mean, x.astype(moments.mean.dtype) - moments.mean
        sigma_batch, sigma = jnp.sqrt(moments.var + eps), ra_sigma.value

        r_max, d_max = renorm_limits(steps.value, self.config)
        # The gradient treats r and d as constants (the paper's stop_gradient): it flows through mu_B and
        # sigma_B alone, as in BatchNorm.
        r = jax.lax.stop_gradient(jnp.clip(sigma_batch / sigma, 1.0 / r_max, r_max))
        d = jax.lax.stop_gradient(jnp.clip((mean - ra_mean.value) / sigma, -d_max, d_max))
        y = centered / sigma_batch * r + d

        if not self.is_initializing():
            var = moments.var
            if self.config.unbiased_running_var:
                var = var * moments.count / jnp.maximum(moments.count - 1, 1)
            # sigma_B per example (ghost groups) or per channel: its mean over examples is the mean over groups.
            target = jnp.sqrt(var + eps).reshape(-1, channels).mean(0)
            ra_mean.value = m * ra_mean.value + (1 - m) * moments.running_mean
            ra_sigma.value = m * ra_sigma.value + (1 - m) * target
            steps.value = steps.value + 1
        return (y * scale + bias).astype(x.dtype)


def check(config, channels):
    if config.renorm_r_max < 1 or config.renorm_d_max < 0:
        raise ConfigError(
            f"batch_renorm: norm.renorm_r_max must be >= 1 and norm.renorm_d_max >= 0, "
            f"got {config.renorm_r_max} and {config.renorm_d_max}"
        )
    for name in ("renorm_hold_fraction", "renorm_r_ramp_fraction", "renorm_d_ramp_fraction"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"batch_renorm: norm.{name} must be >= 0, got {getattr(config, name)}")
    if config.renorm_train_steps is not None and config.renorm_train_steps < 1:
        raise ConfigError(
            f"batch_renorm: norm.renorm_train_steps must be >= 1 (or none), got {config.renorm_train_steps}"
        )
    check_example_weight(config, channels)


def make(config, stats):
    return lambda train: BatchRenorm(not train, config, stats)


SPEC = NormSpec(
    name="batch_renorm",
    make=make,
    batch_dependent=True,
    running_stats=True,
    summary="Batch Renormalization: BatchNorm corrected toward its running averages by clipped r, d",
    reduces_over="batch, spatial",
    options=(
        *RUNNING_OPTIONS,
        "renorm_r_max",
        "renorm_d_max",
        "renorm_hold_fraction",
        "renorm_r_ramp_fraction",
        "renorm_d_ramp_fraction",
        "renorm_train_steps",
        EXAMPLE_WEIGHT,
    ),
    fuses_activation=False,
    scale_invariant=True,
    check=check,
)
