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
`normbench.models.probes`) and written as `diagnostics.csv`, one row per run, epoch and layer.
"""

from __future__ import annotations

import csv
import io
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normbench.config import Config, value_grid

LOG10_EDGES = np.arange(-12.0, 6.01, 0.5)
COLUMNS = (
    "model", "norm", "protocol", "batch_size", "ghost_size", "init_scale", "seed", "learning_rate", "epoch",
    "layer", "pre_std", "output_std", "zero_frac", "nonfinite_frac", "grad_norm", "pre_hist", "output_hist",
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
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for result in results:
        cell = result.cell
        grid = enumerate(value_grid(config, cell))
        for (s, seed), (k, (init_scale, lr, ghost)) in itertools.product(enumerate(config.sweep.seeds), grid):
            for epoch, d in sorted(result.diagnostics.items()):
                for layer in range(d.pre_std.shape[-1]):
                    scalars = [f"{float(getattr(d, f)[s, k, layer]):.7g}" for f in Diagnostics._fields[:5]]
                    hists = [" ".join(f"{v:.5g}" for v in getattr(d, f)[s, k, layer]) for f in Diagnostics._fields[5:]]
                    writer.writerow([cell.model, cell.norm, cell.protocol, cell.batch_size, ghost, repr(init_scale),
                                     seed, repr(lr), epoch, layer + 1, *scalars, *hists])  # fmt: skip
    return out.getvalue()


def read_diagnostics(path) -> dict[str, np.ndarray]:
    """`diagnostics.csv` as columns; the histograms as (rows, bins) float arrays."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for name in COLUMNS:
        raw = [r[name] for r in rows]
        if name in ("model", "norm", "protocol"):
            columns[name] = np.asarray(raw)
        elif name.endswith("_hist"):
            columns[name] = np.array([[float(v) for v in r.split()] for r in raw]).reshape(len(rows), -1)
        elif name in ("batch_size", "ghost_size", "seed", "epoch", "layer"):
            columns[name] = np.asarray(raw, dtype=np.int64)
        else:
            columns[name] = np.asarray(raw, dtype=np.float64)
    return columns


def _spread(values, count: int) -> list:
    """Up to `count` of the sorted `values`, evenly spread from the first to the last."""
    values = sorted(values, reverse=True)
    picks = np.unique(np.linspace(0, len(values) - 1, min(count, len(values))).round().astype(int))
    return [values[i] for i in picks]


def _mean_over_seeds(columns, rows, field):
    """Per layer, the mean over the selected rows (the seeds of one configuration)."""
    layers = np.unique(columns["layer"][rows])
    return layers, np.stack([columns[field][rows & (columns["layer"] == layer)].mean(0) for layer in layers])


def activations_figure(columns: dict[str, np.ndarray], config: Config):
    """Histograms of each layer's outputs (log10 |value|), mean over seeds: rows are init scales, columns are
    norms at the first and the last recorded epoch. The plain net's outputs drift left layer after layer at small
    scales (and right at large ones); a norm keeps every layer where the first one is."""
    import matplotlib.pyplot as plt

    norms = list(dict.fromkeys(columns["norm"]))
    epochs = sorted({int(columns["epoch"].min()), int(columns["epoch"].max())})
    scales = _spread(np.unique(columns["init_scale"]), 4)
    panels = [(norm, epoch) for norm in norms for epoch in epochs]
    fig, axes = plt.subplots(len(scales), len(panels), figsize=(3.0 * len(panels), 2.2 * len(scales)),
                             sharex=True, squeeze=False)  # fmt: skip
    centers = (LOG10_EDGES[:-1] + LOG10_EDGES[1:]) / 2
    for row, scale in enumerate(scales):
        for col, (norm, epoch) in enumerate(panels):
            ax = axes[row, col]
            rows = (columns["init_scale"] == scale) & (columns["norm"] == norm) & (columns["epoch"] == epoch)
            layers, hists = _mean_over_seeds(columns, rows, "output_hist")
            _, zeros = _mean_over_seeds(columns, rows, "zero_frac")
            _, nonfinite = _mean_over_seeds(columns, rows, "nonfinite_frac")
            for layer, hist in zip(layers, hists):
                ax.plot(centers, hist, drawstyle="steps-mid", color=plt.cm.viridis(layer / len(layers)),
                        label=f"layer {layer}")  # fmt: skip
            ax.set_title(f"{norm}, W: {scale:.2g}, epoch {epoch}", fontsize=9)
            note = f"zeros {zeros.mean():.0%}" + (f", non-finite {nonfinite.mean():.0%}" if nonfinite.any() else "")
            ax.text(0.02, 0.95, note, transform=ax.transAxes, fontsize=7, va="top")
            ax.set_ylim(0, None)
            ax.set_yticks([])
    for ax in axes[-1]:
        ax.set_xlabel("log10 |output|")
    axes[0, 0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{config.name}: each layer's outputs (after norm and activation), share per bin", fontsize=11)
    fig.tight_layout()
    return fig


def layer_stats_figure(columns: dict[str, np.ndarray], config: Config):
    """Per layer at the last recorded epoch, mean over seeds: the pre-norm standard deviation and the gradient
    norm with respect to the layer's output, one line per init scale, one column per norm."""
    import matplotlib.pyplot as plt

    norms = list(dict.fromkeys(columns["norm"]))
    epoch = int(columns["epoch"].max())
    scales = sorted(np.unique(columns["init_scale"]), reverse=True)
    fig, axes = plt.subplots(2, len(norms), figsize=(3.6 * len(norms) + 1.4, 5.6), sharey="row", squeeze=False)
    for col, norm in enumerate(norms):
        for i, scale in enumerate(scales):
            rows = (columns["init_scale"] == scale) & (columns["norm"] == norm) & (columns["epoch"] == epoch)
            for ax, field in zip(axes[:, col], ("pre_std", "grad_norm")):
                layers, values = _mean_over_seeds(columns, rows, field)
                ax.plot(layers, values, "o-", markersize=3, color=plt.cm.plasma(i / max(len(scales) - 1, 1)),
                        label=f"W: {scale:.2g}")  # fmt: skip
                ax.set_yscale("log")
        axes[0, col].set_title(f"{norm}, epoch {epoch}", fontsize=10)
        axes[1, col].set_xlabel("layer")
    axes[0, 0].set_ylabel("std of pre-norm values")
    axes[1, 0].set_ylabel("|dloss / d output|")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="center right", fontsize=7)
    fig.suptitle(f"{config.name}: layer statistics (mean over seeds)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    return fig


FIGURES = {"activations": activations_figure, "layer_stats": layer_stats_figure}
