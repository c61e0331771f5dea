"""Layer diagnostics (`train.diagnostics_at`, `normbench run --diagnostics`): what each normalized layer's values
look like at chosen epochs, the textbook's activation histograms that motivate BatchNorm in the first place.

At each chosen epoch (0: at init) every run passes its first training batch through the model in train mode
(so BatchNorm uses that batch's statistics, as in training; nothing is updated) and records, per layer:

- `pre_std`, `output_std`: the standard deviation of the layer's pre-norm values and of its output (after the
  norm and the activation);
- `zero_frac`, `nonfinite_frac`: the fractions of outputs that are exactly 0 (ReLU units that are off) and that
  are NaN or infinite (a run that diverged);
- `grad_norm`: the L2 norm of the loss's gradient with respect to the layer's output, over the batch;
- `pre_hist`, `output_hist`: histograms of log10 |value| over `LOG10_EDGES`, as fractions of all values (the
  zeros and non-finite values are in no bin; values beyond the edges are counted in the end bins). A log scale shows
  an activation that collapses towards 0 or explodes as plainly as one that stays put.

All of it is computed inside the compiled program (`Training.diagnose`, from the sown and perturbed values of
`normbench.models.probes`) and written as `diagnostics.csv`, one row per run, epoch and layer; its figures are
`normbench.reports.layer_figures`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normbench.config import Config
from normbench.results.table import read_table, table_csv

LOG10_EDGES = np.arange(-12.0, 6.01, 0.5)
# What diagnostics.csv records of a run at each recorded epoch and layer, after its key columns.
COLUMNS = (
    "epoch", "layer", "pre_std", "output_std", "zero_frac", "nonfinite_frac", "grad_norm", "pre_hist", "output_hist",
)  # fmt: skip
DIAGNOSTICS = "diagnostics.csv"


class Diagnostics(NamedTuple):
    """One run's layers at one epoch: each field has a leading layer axis."""

    pre_std: jax.Array
    output_std: jax.Array
    zero_frac: jax.Array
    nonfinite_frac: jax.Array
    grad_norm: jax.Array
    pre_hist: jax.Array  # (layers, len(LOG10_EDGES) - 1)
    output_hist: jax.Array


def layer_diagnostics(model, params, batch_stats, x, y) -> Diagnostics:
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
    return Diagnostics(
        pre_std=jnp.stack([v.std() for v in pre]),
        output_std=jnp.stack([v.std() for v in out]),
        zero_frac=jnp.stack([jnp.mean(v == 0) for v in out]),
        nonfinite_frac=jnp.stack([jnp.mean(~jnp.isfinite(v)) for v in out]),
        grad_norm=jnp.stack([jnp.sqrt(jnp.sum(g**2)) for g in grad]),
        pre_hist=jnp.stack([log_histogram(v) for v in pre]),
        output_hist=jnp.stack([log_histogram(v) for v in out]),
    )


def log_histogram(values: jax.Array) -> jax.Array:
    """Fractions of `values` per bin of log10 |value|; exact zeros and non-finite values fall in no bin."""
    values = values.reshape(-1)
    nonzero = (values != 0) & jnp.isfinite(values)
    logs = jnp.log10(jnp.where(nonzero, jnp.abs(values), 1.0))
    bins = jnp.clip(jnp.searchsorted(jnp.asarray(LOG10_EDGES, values.dtype), logs, side="right") - 1,
                    0, len(LOG10_EDGES) - 2)  # fmt: skip
    counts = jnp.zeros(len(LOG10_EDGES) - 1, values.dtype).at[bins].add(nonzero.astype(values.dtype))
    return counts / values.size


def diagnostics_csv(config: Config, results) -> str:
    """One row per run, recorded epoch and layer; the histograms as space-separated fractions."""

    def rows(result, s, k):
        for epoch, d in sorted(result.diagnostics.items()):
            for layer in range(d.pre_std.shape[-1]):
                scalars = [f"{float(getattr(d, f)[s, k, layer]):.7g}" for f in Diagnostics._fields[:5]]
                hists = [" ".join(f"{v:.5g}" for v in getattr(d, f)[s, k, layer]) for f in Diagnostics._fields[5:]]
                yield [epoch, layer + 1, *scalars, *hists]

    return table_csv(config, results, COLUMNS, rows)


def read_diagnostics(path) -> dict[str, np.ndarray]:
    """`diagnostics.csv` as columns; the histograms as (rows, bins) float arrays."""
    return read_table(path, COLUMNS)
