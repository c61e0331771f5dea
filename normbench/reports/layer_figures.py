"""The figures of layer diagnostics (`normbench.core.diagnostics`), drawn from `diagnostics.csv` alone."""

from __future__ import annotations

import numpy as np

from normbench.config import Config
from normbench.core.axes import EPOCH, key_columns
from normbench.core.diagnostics import LOG10_EDGES
from normbench.reports.labels import norm_label, seeds_text


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


FLUCTUATIONS = {
    "mean_fluctuation": "mean: (1/d) ||μ_B - μ||",
    "var_fluctuation": "variance: (1/d) ||σ²_B - σ²||",
}


def setting_label(keys, values) -> str:
    """A configuration as a reader names it: "BatchNorm, post-norm, warmup fraction 0.2"."""
    return ", ".join(_value_label(k, v) for k, v in zip(keys, values))


def _value_label(column: str, value) -> str:
    if column == "norm":
        return norm_label(value)
    if column == "model.norm_placement":
        return f"{value}-norm"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{column.split('.')[-1].replace('_', ' ')} {text}"


def fluctuation_settings(columns, tuned: tuple[str, ...]) -> tuple[list[str], list[tuple]]:
    """The columns that tell the configurations with batch statistics apart (not the seed, nor the tuned axes,
    whose chosen value each configuration has one of), and those configurations."""
    has = ~np.isnan(columns["var_fluctuation"])
    keys = [k for k in key_columns(columns) if k not in ("seed", *tuned) and len(np.unique(columns[k][has])) > 1]
    keys = keys or ["norm"]
    return keys, list(dict.fromkeys(zip(*(columns[k][has] for k in keys))))


def fluctuation_figure(columns: dict[str, np.ndarray], config: Config):
    """Shen et al.'s (2020) Figure 2 per layer: how far each batch's statistics stray from the running ones over
    training, the mean's and the variance's (PowerNorm: its quadratic mean's), one curve per layer, mean over
    seeds; one panel per statistic and configuration of a norm with batch statistics. Logarithmic: the layers
    differ by orders of magnitude."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys, settings = fluctuation_settings(columns, config.report.tune)
    panels = [
        (setting, field)
        for setting in settings
        for field in FLUCTUATIONS
        if not np.isnan(columns[field][np.all([columns[k] == v for k, v in zip(keys, setting)], 0)]).all()
    ]
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.6 * nrows + 0.9), squeeze=False)
    layers = np.unique(columns["layer"])
    for ax, (setting, field) in zip(axes.flat, panels):
        rows = np.all([columns[k] == v for k, v in zip(keys, setting)], axis=0)
        for layer in layers:
            at = rows & (columns["layer"] == layer)
            epochs = np.unique(columns[EPOCH][at])
            means = [np.nanmean(columns[field][at & (columns[EPOCH] == e)]) for e in epochs]
            ax.plot(epochs, means, "o-", markersize=2.5, color=plt.cm.viridis(layer / len(layers)),
                    label=f"layer {layer}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(f"{setting_label(keys, setting)}\n{FLUCTUATIONS[field]}", fontsize=8.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(layers), fontsize=8, frameon=False)
    seeds = seeds_text(len(np.unique(columns["seed"])))
    fig.suptitle(f"{config.name}: distance of the batch statistics from the running ones, per layer (Shen et al., "
                 f"2020, Fig. 2); mean over {seeds}; PowerNorm keeps ψ², no μ", fontsize=10,
                 wrap=True)  # fmt: skip
    fig.tight_layout(rect=(0, 0.5 / fig.get_size_inches()[1], 1, 1))
    return fig


FIGURES = {
    "activations": activations_figure,
    "layer_stats": layer_stats_figure,
    "batch_fluctuation": fluctuation_figure,
}
# What a config with layer diagnostics that names none of FIGURES gets: the textbook's pictures of its layers.
DEFAULT = ("activations", "layer_stats")
