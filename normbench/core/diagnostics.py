"""Layer diagnostics (`train.diagnostics_at`, `normbench run --diagnostics`): what each normalized layer's values
look like at chosen epochs, the textbook's activation histograms that motivate BatchNorm in the first place.

At each chosen epoch (0: at init) every run passes its first training batch through the model in train mode
(so BatchNorm uses that batch's statistics, as in training; nothing is updated) and records, per layer:

- `pre_std`, `output_std`: the standard deviation of the layer's pre-norm values and of its output (after the
  norm and the activation);
- `zero_frac`, `nonfinite_frac`: the fractions of outputs that are exactly 0 (ReLU units that are off) and that
  are NaN or infinite (a run that diverged);
- `grad_norm`: the L2 norm of the loss's gradient with respect to the layer's output, over the batch;
- `mean_fluctuation`, `var_fluctuation`: how far the batch statistics stray from the running ones (Shen et al.,
  2020, PowerNorm, Figure 2), (1/d) ||mu_B - mu|| and (1/d) ||sigma_B^2 - sigma^2|| over the layer's d channels,
  averaged over the batches PreciseBN reads (`train.precise_bn_examples`), the weights frozen. sigma^2 stands for
  the norm's second-moment statistic: PowerNorm's quadratic mean psi^2 (it keeps no mean: `mean_fluctuation` NaN),
  batch renorm's sigma^2. A norm without running statistics (LayerNorm, none) has neither: NaN;
- `mean_noise`, `var_noise`, `positions`: how noisy a batch statistic of the run's own size g is (`ghost_size`:
  its ghost group, or its whole batch): what BatchNorm sees there, or would see under any other norm. PreciseBN's
  batches (`statistics_batch` examples each, a multiple of g) are cut into groups of g consecutive examples; over
  all the groups, per channel, Var(mu_B) / sigma^2 and Var(sigma^2_B) / sigma^4, mu_B and sigma^2_B (biased) a
  group's mean and variance of the layer's pre-norm values, mu and sigma^2 those of all the values of all the
  batches (the population); then the mean over the channels that vary. `positions` is the values per example
  and channel (1 for the MLP, the pixels of a conv layer's output, a ViT's tokens), so a statistic holds
  n = g x positions values.
  Why these: for n values drawn iid from a Gaussian, Var(mu_B) / sigma^2 = 1/n and Var(sigma^2_B) / sigma^4 =
  2(n - 1)/n^2 ~ 2/n (for other iid values (kurtosis - 1)/n). So against g the noise falls as 1/g if an image's
  positions move as one value, and as 1/(g x positions) if they are independent: where a layer lies between the
  two says how many independent values its statistic really holds, the question of whether BN's batch is
  counted in images or in values. The variance over groups is the unbiased one (their own mean is the reference);
  with a single group, or no channel that varies (an MLP's layers after a BatchNorm over one example, which
  outputs its bias), there is none: NaN;
- `pre_hist`, `output_hist`: histograms of log10 |value| over `LOG10_EDGES`, as fractions of all values (the
  zeros and non-finite values are in no bin; values beyond the edges are counted in the end bins). A log scale shows
  an activation that collapses towards 0 or explodes as plainly as one that stays put.

All of it is computed inside the compiled program (`Training.diagnose`, from the sown and perturbed values of
`normbench.models.probes`) and written as `diagnostics.csv`, one row per run, epoch and layer; its figures are
`normbench.reports.layer_figures`. Tables written before the noise was measured lack its columns: they read back
as NaN (`normbench.results.diagnostics.read_diagnostics`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normbench.norms.moments import batch_moments

LOG10_EDGES = np.arange(-12.0, 6.01, 0.5)
# What diagnostics.csv records of a run at each recorded epoch and layer, after its key columns.
COLUMNS = (
    "epoch", "layer", "pre_std", "output_std", "zero_frac", "nonfinite_frac", "grad_norm", "mean_fluctuation",
    "var_fluctuation", "mean_noise", "var_noise", "positions", "pre_hist", "output_hist",
)  # fmt: skip
# Columns of COLUMNS that tables written before them lack; they read back as NaN.
LATER_COLUMNS = ("mean_noise", "var_noise", "positions")
DIAGNOSTICS = "diagnostics.csv"


class Diagnostics(NamedTuple):
    """One run's layers at one epoch: each field has a leading layer axis."""

    pre_std: jax.Array
    output_std: jax.Array
    zero_frac: jax.Array
    nonfinite_frac: jax.Array
    grad_norm: jax.Array
    mean_fluctuation: jax.Array
    var_fluctuation: jax.Array
    mean_noise: jax.Array
    var_noise: jax.Array
    positions: jax.Array
    pre_hist: jax.Array  # (layers, len(LOG10_EDGES) - 1)
    output_hist: jax.Array


def layer_diagnostics(model, params, batch_stats, x, y, probe, batches, group_size) -> Diagnostics:
    """The diagnostics of the batch `x`, `y`, and the fluctuation and noise of the batch statistics over `batches`
    (a stack of input batches), which `probe`, the model with its norms' momentum at 0, reads (`batch_fluctuation`,
    `statistic_noise` of statistics over `group_size` examples, which may be traced)."""

    def forward(variables):
        return model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])

    plain = {"params": params, "batch_stats": batch_stats}
    outputs = jax.eval_shape(forward, plain)[1]["intermediates"]["output"]
    perturbations = {f"layer{i}": jnp.zeros(out.shape, out.dtype) for i, out in enumerate(outputs)}

    def loss(perturbations):
        logits, state = forward({**plain, "perturbations": perturbations})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state["intermediates"]

    grads, sown = jax.grad(loss, has_aux=True)(perturbations)
    pre, out = sown["pre_norm"], sown["output"]
    grad = [grads[f"layer{i}"] for i in range(len(out))]
    mean_fluctuation, var_fluctuation = batch_fluctuation(probe, plain, batches, len(out))
    mean_noise, var_noise = statistic_noise(probe, plain, batches, group_size)
    return Diagnostics(
        pre_std=jnp.stack([v.std() for v in pre]),
        output_std=jnp.stack([v.std() for v in out]),
        zero_frac=jnp.stack([jnp.mean(v == 0) for v in out]),
        nonfinite_frac=jnp.stack([jnp.mean(~jnp.isfinite(v)) for v in out]),
        grad_norm=jnp.stack([jnp.sqrt(jnp.sum(g**2)) for g in grad]),
        mean_fluctuation=mean_fluctuation,
        var_fluctuation=var_fluctuation,
        mean_noise=mean_noise,
        var_noise=var_noise,
        positions=jnp.asarray([v.size // (v.shape[0] * v.shape[-1]) for v in pre], jnp.float32),
        pre_hist=jnp.stack([log_histogram(v) for v in pre]),
        output_hist=jnp.stack([log_histogram(v) for v in out]),
    )


def batch_fluctuation(probe, variables, batches, layers: int) -> tuple[jax.Array, jax.Array]:
    """Per layer, (1/d) ||mu_B - mu|| and (1/d) ||sigma_B^2 - sigma^2|| averaged over `batches`: each batch's
    statistics against the running ones in `variables`, nothing updated. `probe` has its norms' momentum at 0, so
    the "running" statistics a train-mode pass returns are the batch's, as PreciseBN reads them
    (`normbench.core.train.precise_batch_stats`); its forward pass is the model's, so a later layer sees what it
    sees in training. NaN where a layer keeps no such statistic."""
    running = in_layer_order(variables["batch_stats"])
    if not running:
        nan = jnp.full(layers, jnp.nan, jnp.float32)
        return nan, nan
    if len(running) != layers:
        raise ValueError(f"{len(running)} norms keep running statistics, but the model records {layers} layers")

    def one(_, x):
        _, updates = probe.apply(variables, x, train=True, mutable=["batch_stats"])
        batch = in_layer_order(updates["batch_stats"])
        return None, jnp.stack([jnp.stack(_distances(b, r)) for b, r in zip(batch, running)])

    _, per_batch = jax.lax.scan(one, None, batches)
    distance = per_batch.mean(0)  # (layers, 2)
    return distance[:, 0], distance[:, 1]


def statistic_noise(probe, variables, batches, group_size) -> tuple[jax.Array, jax.Array]:
    """Per layer, Var(mu_B) / sigma^2 and Var(sigma^2_B) / sigma^4 over the groups of `group_size` consecutive
    examples of `batches` (see the module docstring). The groups' statistics are the norms' own
    (`normbench.norms.moments.batch_moments`), so a traced size needs no shape of its own; the forward pass is
    `probe`'s, nothing updated, so a later layer sees what it sees in training."""

    def one(_, x):
        _, state = probe.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
        return None, [_batch_moments(pre, group_size) for pre in state["intermediates"]["pre_norm"]]

    _, per_batch = jax.lax.scan(one, None, batches)
    groups = batches.shape[0] * batches.shape[1] / group_size
    noise = jnp.stack([jnp.stack(_noise(*moments, groups)) for moments in per_batch])  # (layers, 2)
    return noise[:, 0], noise[:, 1]


def _batch_moments(pre, group_size):
    """One batch's (per example: its group's mean and variance, (B, C)), and the batch's mean and variance."""
    grouped, whole = batch_moments(pre, group_size), batch_moments(pre)
    channels = pre.shape[-1]
    return grouped.mean.reshape(-1, channels), grouped.var.reshape(-1, channels), whole.mean, whole.var


def _noise(group_mean, group_var, batch_mean, batch_var, groups):
    """The two noises, mean over the channels that vary, from per-batch moments (leading axis: batch). Every group
    holds as many examples, so a mean over examples of their group's statistic is the mean over groups, and the
    batches' moments give the population's by the law of total variance."""
    mean, var = batch_mean.mean(0), batch_var.mean(0) + batch_mean.var(0)
    unbiased = jnp.where(groups > 1, groups / jnp.maximum(groups - 1, 1), jnp.nan)
    mean_var = jnp.square(group_mean - mean).mean((0, 1)) * unbiased
    var_var = jnp.square(group_var - group_var.mean((0, 1))).mean((0, 1)) * unbiased
    varies = var > 0
    safe = jnp.where(varies, var, 1.0)

    def over_channels(per_channel):
        return jnp.sum(jnp.where(varies, per_channel, 0.0)) / jnp.sum(varies)

    return over_channels(mean_var / safe), over_channels(var_var / jnp.square(safe))


def in_layer_order(stats: dict) -> list[dict]:
    """Each norm's statistics in the order of the layers. A model that records its layers holds its norms as
    direct children, which Flax names `<Class>_<n>` in the order they are created; a tree's dicts come back
    sorted by name, `BatchNorm_10` before `BatchNorm_2`."""
    return [stats[name] for name in sorted(stats, key=lambda name: int(name.rsplit("_", 1)[1]))]


def _distances(batch: dict, running: dict) -> tuple[jax.Array, jax.Array]:
    """(1/d) ||batch - running|| of the mean and of the second moment (the variance, PowerNorm's psi^2, batch
    renorm's sigma^2); NaN for one the norm does not keep. PowerNorm's nu moves in the backward pass: left out."""

    def distance(b, r):
        return jnp.linalg.norm(b - r) / b.size

    nan = jnp.float32(jnp.nan)
    mean = distance(batch["mean"], running["mean"]) if "mean" in running else nan
    if "sigma" in running:
        return mean, distance(jnp.square(batch["sigma"]), jnp.square(running["sigma"]))
    second = next((key for key in ("var", "psi2") if key in running), None)
    return mean, nan if second is None else distance(batch[second], running[second])


def log_histogram(values: jax.Array) -> jax.Array:
    """Fractions of `values` per bin of log10 |value|; exact zeros and non-finite values fall in no bin."""
    values = values.reshape(-1)
    nonzero = (values != 0) & jnp.isfinite(values)
    logs = jnp.log10(jnp.where(nonzero, jnp.abs(values), 1.0))
    bins = jnp.clip(jnp.searchsorted(jnp.asarray(LOG10_EDGES, values.dtype), logs, side="right") - 1,
                    0, len(LOG10_EDGES) - 2)  # fmt: skip
    counts = jnp.zeros(len(LOG10_EDGES) - 1, values.dtype).at[bins].add(nonzero.astype(values.dtype))
    return counts / values.size
