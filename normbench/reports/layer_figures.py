"""The figures of layer diagnostics (`normbench.core.diagnostics`), drawn from `diagnostics.csv` alone."""

from __future__ import annotations

import numpy as np

from normbench.config import Config
from normbench.core.diagnostics import LOG10_EDGES
from normbench.reports.labels import norm_label


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
            ax.set_title(f"{norm_label(norm)}, σ = {scale:.2g}, epoch {epoch}", fontsize=9)
            note = f"zeros {zeros.mean():.0%}" + (f", non-finite {nonfinite.mean():.0%}" if nonfinite.any() else "")
            ax.text(0.02, 0.95, note, transform=ax.transAxes, fontsize=7, va="top")
            ax.set_ylim(0, None)
            ax.set_yticks([])
    for ax in axes[-1]:
        ax.set_xlabel("log10 |output|")
    axes[0, 0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{config.name}: each layer's outputs (after norm and activation), share per bin; "
                 "σ = init std", fontsize=11)  # fmt: skip
    fig.tight_layout()
    return fig


def layer_stats_figure(columns: dict[str, np.ndarray], config: Config):
    """Per layer at the last recorded epoch, mean over seeds: the pre-norm standard deviation and the gradient
    norm with respect to the layer's output, one line per init scale, one column per norm."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
                        label=f"σ = {scale:.2g}")  # fmt: skip
                ax.set_yscale("log")
        axes[0, col].set_title(f"{norm_label(norm)}, epoch {epoch}", fontsize=10)
        axes[1, col].set_xlabel("layer")
        for ax in axes[:, col]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are counted, never 1.2
    axes[0, 0].set_ylabel("std of pre-norm values")
    axes[1, 0].set_ylabel("|dloss / d output|")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="center right", fontsize=7, title="init std",
               title_fontsize=7)  # fmt: skip
    fig.suptitle(f"{config.name}: layer statistics (mean over seeds)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    return fig


FIGURES = {"activations": activations_figure, "layer_stats": layer_stats_figure}
