"""The figures of layer diagnostics (`normbench.core.diagnostics`), drawn from `diagnostics.csv` alone."""

from __future__ import annotations

import numpy as np

from normbench.config import Config
from normbench.core.axes import EPOCH, key_columns
from normbench.core.diagnostics import LOG10_EDGES
from normbench.errors import UserError
from normbench.reports.labels import norm_label, seeds_text
from normbench.results.stats import mean_ci


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
# Each fluctuation over its layer's scale: the mean's distance over the standard deviation of the layer's pre-norm
# values (`pre_std`), the variance's over its square. In a residual stream that scale grows with depth, and the
# distances grow with it: relative to it, a deeper layer's statistics may stray no more than the first's.
RELATIVE = {
    "mean_fluctuation": ("(1/d) ||μ_B - μ|| / std", 1),
    "var_fluctuation": ("(1/d) ||σ²_B - σ²|| / std²", 2),
}


def relative_fluctuation(columns, field: str) -> np.ndarray:
    """`field` (one of FLUCTUATIONS) over its layer's scale, row by row: over `pre_std` to the statistic's order.
    NaN where the layer's pre-norm values were all equal (`pre_std` 0): it has no scale to compare with."""
    scale = np.asarray(columns["pre_std"], float) ** RELATIVE[field][1]
    return np.divide(columns[field], scale, out=np.full(scale.shape, np.nan), where=scale > 0)


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
    """Shen et al.'s (2020) Figure 2 per layer: how far each batch's statistics stray from the running ones, the
    mean's and the variance's (PowerNorm: its quadratic mean's), against the layer, as measured and over the
    layer's scale (`RELATIVE`), one line per configuration of a norm with batch statistics, mean over seeds; one
    column per recorded epoch after init (at most 3). At init (epoch 0) the running statistics are still their
    initial values (mean 0, variance 1), so the distance there is not a fluctuation: it is not drawn.
    Logarithmic: the layers differ by orders of magnitude."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trained = np.unique(columns[EPOCH][columns[EPOCH] >= 1])
    if not len(trained):
        raise UserError("batch_fluctuation draws the epochs after init, and diagnostics.csv records none: add one "
                        "to train.diagnostics_at")  # fmt: skip
    epochs = sorted(_spread(trained, 3))
    keys, settings = fluctuation_settings(columns, config.report.tune)
    rows = [(field, relative) for field in FLUCTUATIONS for relative in (False, True)
            if not np.isnan(columns[field]).all()]  # fmt: skip
    fig, axes = plt.subplots(len(rows), len(epochs), figsize=(4.0 * len(epochs), 2.5 * len(rows) + 1.4),
                             sharey="row", squeeze=False)  # fmt: skip
    for (field, relative), row in zip(rows, axes):
        values = relative_fluctuation(columns, field) if relative else columns[field]
        for ax, epoch in zip(row, epochs):
            for i, setting in enumerate(settings):
                at = np.all([columns[k] == v for k, v in zip(keys, setting)], axis=0) & (columns[EPOCH] == epoch)
                if np.isnan(values[at]).all():  # PowerNorm keeps no mean
                    continue
                layers = np.unique(columns["layer"][at])
                means = [np.nanmean(values[at & (columns["layer"] == layer)]) for layer in layers]
                ax.plot(layers, means, "o-", markersize=3, color=f"C{i}", label=setting_label(keys, setting))
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are counted, never 1.5
            ax.grid(alpha=0.3, which="both")
        row[0].set_ylabel(RELATIVE[field][0] if relative else FLUCTUATIONS[field].split(": ")[1], fontsize=8.5)
    for ax, epoch in zip(axes[0], epochs):
        ax.set_title(f"epoch {epoch}", fontsize=9.5)
    for ax in axes[-1]:
        ax.set_xlabel("layer", fontsize=8.5)
    # Every configuration draws a variance row, not every one a mean row (PowerNorm keeps none).
    handles, labels = axes[-1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    seeds = seeds_text(len(np.unique(columns["seed"])))
    fig.suptitle(f"{config.name}: distance of the batch statistics from the running ones per layer (Shen et al., "
                 f"2020, Fig. 2), as measured and over the layer's scale (std: of its pre-norm values); mean over "
                 f"{seeds}; PowerNorm's σ² is its ψ², and it keeps no μ", fontsize=10, wrap=True)  # fmt: skip
    legend_rows = -(-len(labels) // min(len(labels), 4))
    fig.tight_layout(rect=(0, (0.25 * legend_rows + 0.15) / fig.get_size_inches()[1], 1, 1))
    return fig


# The statistic_noise figure's rows: (column, axis label, Gaussian reference for a statistic of n values, its label).
NOISES = (
    ("mean_noise", "Var(μ_B) / σ²", lambda n: 1.0 / n, "1/n"),
    ("var_noise", "Var(σ²_B) / σ⁴", lambda n: 2.0 * (n - 1) / n**2, "2(n-1)/n² ≈ 2/n"),
)


def noise_settings(columns, tuned: tuple[str, ...]) -> tuple[list[str], list[tuple]]:
    """The columns that tell the statistic_noise figure's panels apart, and its panels' configurations: those
    measured at several statistic sizes (the batch-dependent norms), else every measured one. Neither the seed nor
    the size (`ghost_size`, and the `batch_size` that is it under `sgd`) nor a tuned axis splits a panel."""
    has = np.isfinite(columns["mean_noise"])
    if not has.any():
        raise UserError("diagnostics.csv has no statistic noise (mean_noise): it was written before normbench "
                        "measured it; rerun the study to draw statistic_noise")  # fmt: skip
    apart = ("seed", "ghost_size", "batch_size", *tuned)
    keys = [k for k in key_columns(columns) if k not in apart and len(np.unique(columns[k][has])) > 1] or ["norm"]
    settings = list(dict.fromkeys(zip(*(columns[k][has] for k in keys))))

    def sizes(setting):
        return len(np.unique(columns["ghost_size"][has & np.all([columns[k] == v for k, v in zip(keys, setting)], 0)]))

    return keys, [s for s in settings if sizes(s) > 1] or settings


def _positive(values):
    """Values for a log axis: 0 (the variance of a one-value statistic) and below left out."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def statistic_noise_figure(columns: dict[str, np.ndarray], config: Config):
    """The noise of a batch statistic against the images it is taken over, g (`normbench.core.diagnostics`,
    `mean_noise` and `var_noise`), at the last recorded epoch: one column per model (and norm), Var(μ_B)/σ² in
    the first row, Var(σ²_B)/σ⁴ in the second, one line per layer, mean over seeds with its 95% interval (Student
    t). The references are a Gaussian statistic of n iid values: dashed with n = g, an image's positions moving as
    one; dotted in the layer's colour with n = g x positions, every value independent (drawn only where a layer
    has several positions). Where a layer's points fall between the two says whether its noise follows images or
    values."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    epoch = int(columns[EPOCH].max())
    columns = {k: v[columns[EPOCH] == epoch] for k, v in columns.items()}
    keys, settings = noise_settings(columns, config.report.tune)
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings) + 0.4, 7.4), squeeze=False)
    sizes = np.unique(columns["ghost_size"][np.isfinite(columns["mean_noise"])])
    for col, setting in enumerate(settings):
        rows = np.isfinite(columns["mean_noise"]) & np.all([columns[k] == v for k, v in zip(keys, setting)], axis=0)
        layers = np.unique(columns["layer"][rows])
        for ax, (field, label, reference, formula) in zip(axes[:, col], NOISES):
            g = np.unique(columns["ghost_size"][rows]).astype(float)
            ax.plot(g, _positive(reference(g)), "--", color="0.3", linewidth=1)
            for i, layer in enumerate(layers):
                color = plt.cm.viridis(i / max(len(layers) - 1, 1) * 0.85)
                at = rows & (columns["layer"] == layer)
                positions = int(np.nanmax(columns["positions"][at]))
                stats = [_over_seeds(columns[field][at & (columns["ghost_size"] == size)]) for size in g]
                mean, half = (np.array(v) for v in zip(*stats))
                ax.plot(g, _positive(mean), "o-", markersize=3.5, color=color,
                        label=f"layer {layer}: {positions} position{'s' * (positions > 1)}")  # fmt: skip
                ax.fill_between(g, _positive(mean - half), _positive(mean + half), color=color, alpha=0.2,
                                linewidth=0)  # fmt: skip
                if positions > 1:
                    ax.plot(g, _positive(reference(g * positions)), ":", color=color, linewidth=1.3)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sizes, [str(int(s)) for s in sizes])
            ax.xaxis.set_minor_locator(NullLocator())  # log2 minor ticks would fall between the sizes
            ax.grid(alpha=0.3, which="both")
            ax.set_xlabel("images per statistic, g", fontsize=8.5)
            ax.set_ylabel(f"{label}  (Gaussian: {formula})", fontsize=8.5)
        axes[0, col].set_title(setting_label(keys, setting), fontsize=9.5)
        axes[0, col].legend(fontsize=7)
    styles = [
        Line2D([], [], color="0.3", marker="o", markersize=3.5, label="measured: mean over seeds, 95% CI"),
        Line2D([], [], color="0.3", linestyle="--", label="Gaussian, n = g: positions move as one"),
        Line2D([], [], color="0.3", linestyle=":", label="Gaussian, n = g × positions: independent"),
    ]
    wide = len(settings) > 1
    fig.legend(handles=styles, loc="lower center", ncol=3 if wide else 1, fontsize=8, frameon=False)
    seeds = seeds_text(len(np.unique(columns["seed"])))
    tuned = f", at the tuned {' and '.join(config.report.tune)}" if config.report.tune else ""
    fig.suptitle(f"{config.name}: does a batch statistic's noise follow its g images (dashed) or its g × positions "
                 f"values (dotted)?\nPer layer at epoch {epoch}, mean over {seeds}{tuned}", fontsize=10.5,
                 wrap=True)  # fmt: skip
    fig.tight_layout(rect=(0, (0.45 if wide else 0.75) / fig.get_size_inches()[1], 1, 1))
    return fig


def _over_seeds(values) -> tuple[float, float]:
    """`mean_ci` of the finite values (a diverged run's are not); NaN for none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return mean_ci(values) if len(values) else (np.nan, np.nan)


FIGURES = {
    "activations": activations_figure,
    "layer_stats": layer_stats_figure,
    "batch_fluctuation": fluctuation_figure,
    "statistic_noise": statistic_noise_figure,
}
# What a config with layer diagnostics that names none of FIGURES gets: the textbook's pictures of its layers.
DEFAULT = ("activations", "layer_stats")
