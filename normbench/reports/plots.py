"""Figures drawn from a results directory's `metrics.csv` and `config.json` alone: no figure needs retraining.

`FIGURES` maps the names a config lists in `figures` to functions (columns, config) -> matplotlib Figure.
They name norms as a paper does (`NORM_LABELS`), share the y-axis of panels a reader compares, wrap many
panels into rows rather than one wide strip, keep legends off the data and clip confidence bands of errors to
[0, 1]; `draw_figures` writes them as PNG, PDF or SVG.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import math
import textwrap
from pathlib import Path

import numpy as np

from normbench.config import Config
from normbench.core.axes import swept_columns
from normbench.core.diagnostics import DIAGNOSTICS
from normbench.errors import UserError, refused_write
from normbench.models import norm_positions
from normbench.norms import NORMS
from normbench.protocols import BASELINE, PROTOCOLS
from normbench.reports.labels import norm_label, seeds_text
from normbench.reports.landscape_figure import landscape_figure
from normbench.reports.layer_figures import DEFAULT as LAYER_DEFAULT
from normbench.reports.layer_figures import FIGURES as DIAGNOSTICS_FIGURES
from normbench.reports.layer_figures import setting_label
from normbench.reports.summary import data_input_shape, write_summary
from normbench.results.claims import reported, tune
from normbench.results.diagnostics import read_diagnostics
from normbench.results.manifest import DATA, resign
from normbench.results.reader import reading
from normbench.results.stats import final_epoch, mean_ci, norm_batch, per_run
from normbench.results.store import atomic_write, read_config, read_metrics, revise_reporting

LINESTYLES = {"batch": "-", "none": "--"}

FORMATS = ("png", "pdf", "svg")
# PNG resolutions `normbench plot` draws at: below, the panels' text no longer fits; above, a figure takes seconds
# and gigabytes for detail no screen or print shows.
DPI = (30, 600)
MAX_COLUMNS = 3  # panels per row before a figure wraps: wider strips turn unreadable once scaled into a page
# A BN statistic of 1 value is undefined (every output beta) and one of 2 degenerate (every output +-1): there BN
# is broken, not merely noisy, and a figure marks those points apart from the measurements around them.
SHADED = "shaded: 1 value per BN statistic (undefined) or 2 (BN outputs ±1)"
HOLLOW = "hollow: a BN statistic of 1 or 2 values"
MARKS = (SHADED, HOLLOW)  # legend order: last, in this order


def _band(ax, xs, low, high, color, alpha=0.2):
    """A confidence band of an error or accuracy, which cannot leave [0, 1] whatever the interval says."""
    ax.fill_between(xs, np.clip(low, 0, 1), np.clip(high, 0, 1), color=color, alpha=alpha, linewidth=0)


def _legend_columns(fig, labels, fontsize=8) -> int:
    """As many legend columns as fit the figure's width, at most 4: a wider legend would be cut off."""
    entry = 0.55 * fontsize / 72 * max(map(len, labels), default=1) + 0.6  # inches: text plus the line sample
    return max(1, min(len(labels), 4, int(fig.get_size_inches()[0] // entry)))


def _legend_below(fig, axes, fontsize=8) -> float:
    """One legend for the figure, under its panels, of every label any panel drew (first drawing wins), what the
    markers and shading mean (`MARKS`) after the series. Returns its height in inches, for the caller's bottom
    margin: measured, since an estimate from its rows leaves a gap or an overlap as the rows' text grows."""
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    handles = {
        label: handles[label]
        for label in sorted(handles, key=lambda label: MARKS.index(label) + 1 if label in MARKS else 0)
    }
    legend = fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=_legend_columns(fig, handles),
                        fontsize=fontsize, frameon=False)  # fmt: skip
    return legend.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi


def over_seeds(columns, spread: str) -> str:
    """What a title says a figure shows of the seeds: their mean with its `spread`, or a single seed's own numbers,
    which have neither."""
    seeds = np.unique(columns["seed"])
    if len(seeds) == 1:
        return f"seed {seeds[0]} alone (no mean, no {spread})"
    return f"mean and {spread} over {seeds_text(len(seeds))}"


def _series_keys(columns) -> tuple[list[str], list[tuple]]:
    """One curve per norm, split further by batch size and learning rate only where those vary."""
    varying = ("model", "protocol", "batch_size", "learning_rate", *swept_columns(columns))
    keys = ["norm"] + [k for k in varying if len(np.unique(columns[k])) > 1]
    rows = zip(*(columns[k] for k in keys))
    return keys, sorted(set(rows), key=lambda r: tuple(str(v) for v in r))


def _label(keys, key) -> str:
    parts = [norm_label(key[0])] + [f"{k.split('_')[0]}={v}" for k, v in zip(keys[1:], key[1:])]
    return " ".join(parts)


def _fields_in_norm(final: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`final` whose `norm` column also names the swept fields' values ("batch norm.epsilon=0.001"), for
    figures that draw one curve or panel per norm."""
    keys = ["norm", *swept_columns(final)]
    return {**final, "norm": np.asarray([_label(keys, key) for key in zip(*(final[k] for k in keys))])}


def series_colors(n: int) -> list:
    """`n` colours no two alike (a 10-colour cycle repeats from the 11th series): matplotlib's 10 while they
    suffice, else tab20's 20, its dark shades first."""
    import matplotlib

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n > 20:  # beyond any qualitative map: a continuous one, neighbours still apart
        return list(matplotlib.colormaps["turbo"](np.linspace(0, 1, n)))
    tab20 = matplotlib.colormaps["tab20"].colors
    return [tab20[i] for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]


def evaluation_points(epochs: np.ndarray, config: Config) -> tuple[np.ndarray, str]:
    """The x of a curve over training: the epochs where an epoch is a pass over the data; where it is a fixed number
    of steps (`train.steps_per_epoch`, the textbook's evaluation every 10 steps), the SGD steps taken."""
    train = config.train
    if train.steps_per_epoch is None:
        return epochs, "epochs"
    first = train.first_epoch_steps or train.steps_per_epoch
    return first + (epochs - 1) * train.steps_per_epoch, "SGD steps"


def init_scale_figure(columns: dict[str, np.ndarray], config: Config):
    """The textbook's 4x4 grid: train accuracy against epochs, one panel per init scale, mean over seeds with
    a band from the worst to the best seed. Runs that diverged are left out of the mean and drawn on their own,
    thin and dotted up to the epoch their loss went non-finite, marked with an x there."""
    import matplotlib.pyplot as plt

    scales = sorted(np.unique(columns["init_scale"]), reverse=True)
    ncols = math.ceil(math.sqrt(len(scales)))
    nrows = math.ceil(len(scales) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), sharex=True, sharey=True, squeeze=False)
    keys, series = _series_keys(columns)
    colors = dict(zip(series, series_colors(len(series))))
    epochs = np.unique(columns["epoch"])
    xs, x_label = evaluation_points(epochs, config)
    legend = {}  # label -> line, from whichever panel first draws it
    for ax, scale in zip(axes.flat, scales):
        at_scale = columns["init_scale"] == scale
        diverged = {}  # label -> runs that diverged
        for key in series:
            rows = at_scale & np.all([columns[k] == v for k, v in zip(keys, key)], axis=0)
            acc, flags = per_run(columns, rows, "train_acc"), per_run(columns, rows, "diverged")
            alive = flags[:, -1] == 0
            style = LINESTYLES.get(str(key[0]), "-.")
            label = _label(keys, key)
            if alive.any():
                (legend[label],) = ax.plot(xs, acc[alive].mean(0), style, color=colors[key], label=label)
                _band(ax, xs, acc[alive].min(0), acc[alive].max(0), colors[key])
            for run in np.flatnonzero(~alive):
                end = int(np.argmax(flags[run])) + 1
                ax.plot(xs[:end], acc[run, :end], ":", color=colors[key], lw=0.8)
                marker = "diverged (loss non-finite)"
                (legend[marker],) = ax.plot(xs[end - 1], acc[run, end - 1], "x", color="0.3", label=marker)
            if not alive.all():
                diverged[label] = int((~alive).sum())
        # Which norm diverged, not only how many: in a sweep of many norms the crosses overlap at the first points.
        named = ", ".join(f"{label} {n}" for label, n in diverged.items())
        ax.set_title(f"init std σ = {scale:.2g}" + (f"\ndiverged (x): {named}" if diverged else ""), fontsize=10)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(scales) :]:
        ax.set_visible(False)
    for column in axes.T:  # the lowest panel drawn in each column, which is not always in the last row
        lowest = [ax for ax in column if ax.get_visible()][-1]
        lowest.set_xlabel(x_label)
        lowest.tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("train accuracy")
    width, height = fig.get_size_inches()
    # Under the panels, where no curve runs; the figure grows by the legend's height instead of covering data.
    crosses = legend.pop("diverged (loss non-finite)", None)
    if crosses is not None:  # after the curves, whichever panel drew it first
        legend["diverged (loss non-finite)"] = crosses
    ncol = _legend_columns(fig, legend)
    legend_height = 0.25 * math.ceil(len(legend) / ncol) + 0.15
    fig.set_size_inches(width, height + legend_height)
    height += legend_height
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    when = "" if x_label == "epochs" else f" after SGD step {xs[0]}, then every {xs[1] - xs[0]}" if len(xs) > 1 else ""
    fig.suptitle(f"{config.name}: train accuracy{when}, {over_seeds(columns, 'min..max band')}",
                 fontsize=11, y=1 - 0.1 / height)  # fmt: skip
    # Margins fixed in inches, which the shared axes make possible: tight_layout would measure the labels of
    # every panel, a third of this figure's drawing time and part of every run's wall time.
    fig.subplots_adjust(left=0.65 / width, right=1 - 0.1 / width, bottom=(0.5 + legend_height) / height,
                        top=1 - 0.9 / height, wspace=0.08, hspace=0.4)  # fmt: skip
    return fig


def _grid(rows: list, cols: list, width: float, height: float):
    """A figure of len(rows) x len(cols) panels that share the y-axis along each row: the panels a reader
    compares (one model or norm under each protocol) sit side by side, on one scale."""
    import matplotlib.pyplot as plt

    return plt.subplots(len(rows), len(cols), figsize=(width * len(cols), height * len(rows)), sharey="row",
                        squeeze=False)  # fmt: skip


def _finish(fig, axes, title: str, used: set):
    """Hide the panels nobody drew on, title the figure and put one legend under it."""
    for ax in axes.flat:
        ax.set_visible(ax in used)
        if ax in used:
            ax.yaxis.set_tick_params(labelleft=True)  # shared rows hide them, but a hidden neighbour shows none
    legend_height = _legend_below(fig, [ax for ax in axes.flat if ax in used])
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + legend_height + 0.3)
    fit_to_width(fig.suptitle(title, fontsize=11), fig)
    fig.tight_layout(rect=(0, legend_height / (height + legend_height + 0.3), 1, 1))


def fit_to_width(text, fig, share: float = 0.95) -> None:
    """Break the one-line matplotlib `text` at spaces into lines that span at most `share` of `fig`'s width, by the
    text's own mean character width: a single panel is narrower than most titles, and matplotlib's `wrap=True`
    fills the whole width, which cut the last letters off a one-panel figure's title."""
    whole = text.get_window_extent(fig.canvas.get_renderer()).width
    room = share * fig.get_figwidth() * fig.dpi
    if whole > room:
        line = text.get_text()
        text.set_text(textwrap.fill(line, int(len(line) * room / whole)))


def _curve(final, rows, metric):
    """x = the norm's batch, y = mean and 95% CI over seeds of 1 - metric, over the runs that did not diverge
    (a batch where every run diverged has no point)."""
    rows = rows & (final["diverged"] == 0)
    xs = np.unique(norm_batch(final)[rows])
    stats = [mean_ci(1 - final[metric][rows & (norm_batch(final) == x)]) for x in xs]
    mean, ci = (np.array(v) for v in zip(*stats))
    return xs, mean, np.nan_to_num(ci)


def _batch_axes(ax, title, batches):
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("examples per statistic (batch, or ghost group)")
    ax.grid(alpha=0.3)


def error_vs_batch_figure(columns: dict[str, np.ndarray], config: Config):
    """Test error against the norm's batch, one curve per norm, one panel per model (rows) and protocol
    (columns) (GN paper, Figure 1). Mean over seeds with a 95% confidence band; running-average evaluation for
    BN. A norm that does not depend on the batch has no ghost cell: its sgd run at the same SGD batch is drawn
    flat instead."""
    final = _fields_in_norm(final_epoch(columns))
    models = list(dict.fromkeys(final["model"]))
    protocols = sorted(set(final["protocol"]), key=lambda p: p != BASELINE)
    fig, axes = _grid(models, protocols, 4.2, 3.3)
    norms = list(dict.fromkeys(final["norm"]))
    batches = np.unique(norm_batch(final))
    used = set()
    for (r, model), (c, protocol) in itertools.product(enumerate(models), enumerate(protocols)):
        ax = axes[r, c]
        here = (final["model"] == model) & (final["protocol"] == protocol)
        if not here.any():
            continue
        used.add(ax)
        for i, norm in enumerate(norms):
            rows = here & (final["norm"] == norm)
            if rows.any():
                xs, mean, ci = _curve(final, rows, "test_acc")
                lost = int(final["diverged"][rows].sum())
                label = f"{norm} ({lost} diverged runs left out)" if lost else norm
                ax.plot(xs, mean, "o-", color=f"C{i}", label=label, markersize=4)
                _band(ax, xs, mean - ci, mean + ci, f"C{i}")
            elif PROTOCOLS[protocol].statistic_axis:
                sgd = (final["model"] == model) & (final["protocol"] == BASELINE) & (final["norm"] == norm)
                sgd &= final["batch_size"] == final["batch_size"][here].max()
                if sgd.any():
                    mean, ci = mean_ci(1 - final["test_acc"][sgd])
                    xs = np.unique(norm_batch(final)[here])
                    ax.plot(xs, np.full(len(xs), mean), "--", color=f"C{i}", label=f"{norm} (no ghost batch)")
                    _band(ax, xs, mean - np.nan_to_num(ci), mean + np.nan_to_num(ci), f"C{i}", alpha=0.15)
        _batch_axes(ax, f"{model}, {protocol} protocol", batches)
        ax.set_ylabel("test error")
    _finish(fig, axes, f"{config.name}: final-epoch test error, {over_seeds(final, '95% CI')}", used)
    return fig


def _positions(model: str, config: Config, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The values per example that each of the model's batch statistics holds (1 for a Dense layer, the positions of
    a conv's output) on examples of `shape`; None where the shape is not known, and the figure then marks nothing."""
    return None if shape is None else norm_positions(model, config.model, tuple(shape))


def _per_example(model: str, config: Config, shape: tuple[int, ...] | None) -> int | None:
    """The fewest values per example that any of the model's batch statistics holds, None where unknown."""
    positions = _positions(model, config, shape)
    return None if positions is None else min(positions)


def _degenerate(sizes, per_example: int | None) -> np.ndarray:
    """Which statistic sizes (examples per statistic) leave a BN statistic 1 or 2 values."""
    sizes = np.asarray(sizes)
    return np.zeros(sizes.shape, bool) if per_example is None else sizes * per_example <= 2


def _shade_degenerate(ax, sizes, per_example: int | None):
    for x in np.asarray(sizes)[_degenerate(sizes, per_example)]:
        ax.axvspan(x / 1.3, x * 1.3, color="0.85", zorder=0, label=SHADED)


def _markers(ax, xs, ys, degenerate, color, marker="o", markersize=4):
    """A curve's markers, hollow where its statistic is degenerate; the legend says once what hollow means."""
    ax.plot(xs[~degenerate], ys[~degenerate], marker, color=color, markersize=markersize, linestyle="none")
    if degenerate.any():
        ax.plot(xs[degenerate], ys[degenerate], marker, color=color, markersize=markersize + 2,
                markerfacecolor="white", linestyle="none")  # fmt: skip
        ax.plot([], [], marker, color="0.3", markersize=markersize + 2, markerfacecolor="white", linestyle="none",
                label=HOLLOW)  # fmt: skip


def images_per_statistic_figure(columns: dict[str, np.ndarray], config: Config):
    """Test error against the images each batch statistic sees, one panel per model: every batch-dependent norm as
    a curve over its statistic sizes, every batch-independent norm (one size, the SGD batch) as a flat line and band
    across the panel, mean over seeds with a 95% interval, the runs at the rates chosen on the validation set. A
    point whose smallest statistic holds 1 or 2 values (an MLP's BN at 1 or 2 images) is drawn hollow on a shaded
    range, which the legend names: there BN is degenerate, not merely noisy."""
    last = final_epoch(columns)
    final = _fields_in_norm(last)
    batch_dependent = np.array([NORMS[name].batch_dependent for name in last["norm"]])
    models = list(dict.fromkeys(final["model"]))
    fig, axes = _grid([0], models, 4.6, 3.6)
    norms = list(dict.fromkeys(final["norm"]))
    sizes = np.unique(norm_batch(final))
    # A log scale, since errors of 5% and of 90% share a panel and the norms differ by a point at the low end.
    used = set()
    shape = data_input_shape(config)  # loaded once for every panel
    for c, model in enumerate(models):
        ax = axes[0, c]
        used.add(ax)
        here = final["model"] == model
        positions = _positions(model, config, shape)
        per_example = None if positions is None else min(positions)
        for i, norm in enumerate(norms):
            rows = here & (final["norm"] == norm)
            if not rows.any():
                continue
            xs, mean, ci = _curve(final, rows, "test_acc")
            lost = int(final["diverged"][rows].sum())
            label = norm_label(norm) + (f" ({lost} diverged runs left out)" if lost else "")
            if not batch_dependent[rows].any():  # trained once: it is the same at every size
                ax.plot(sizes, np.full(len(sizes), mean[0]), "--", color=f"C{i}", label=f"{label} (no batch statistic)")
                _band(ax, sizes, mean[0] - ci[0], np.full(len(sizes), mean[0] + ci[0]), f"C{i}", alpha=0.12)
                continue
            ax.plot(xs, mean, "-", color=f"C{i}", label=label)
            _markers(ax, xs, mean, _degenerate(xs, per_example), f"C{i}")
            _band(ax, xs, mean - ci, mean + ci, f"C{i}")
        _shade_degenerate(ax, sizes, per_example)
        values = "?" if positions is None else " / ".join(f"g x {p}" if p > 1 else "g" for p in positions)
        if positions is not None and max(positions) == 1:
            values = "g in every layer"
        _batch_axes(ax, f"{model}: values per statistic by layer: {values}", sizes)
        ax.set_yscale("log")
        # Short enough for a panel's width: a longer label runs past the right edge of the figure.
        ax.set_xlabel("g: images per BN statistic (ghost group)")
        ax.set_ylabel("test error")
    title = f"{config.name}: final test error against images per BN statistic, {over_seeds(final, '95% CI')}"
    _finish(fig, axes, title, used)
    return fig


BN_EVAL_MODES = {
    "test_acc": "running averages (EMA)",
    "test_acc_batch_stats": "test batch's own statistics",
    "test_acc_precise": "PreciseBN statistics",
    "train_acc": "train error (running averages)",
    "train_acc_batch_stats": "train error (batch statistics, as trained)",
    "test_acc_example_weighted": "example-weighted (1/g)",
}
# Each mode's marker and line: the modes often agree to a fraction of a point, and a curve drawn over another of
# the same style hides it. A large filled circle under a cross and a dashed line stays visible where they meet.
BN_EVAL_STYLES = {
    "test_acc": dict(marker="o", linestyle="-", markersize=7),
    "test_acc_batch_stats": dict(marker="s", linestyle="-", markersize=4),
    "test_acc_precise": dict(marker="x", linestyle="--", markersize=6),
    "train_acc": dict(marker="v", linestyle=":", markersize=5),
    "train_acc_batch_stats": dict(marker="^", linestyle=":", markersize=5),
    "test_acc_example_weighted": dict(marker="D", linestyle="-.", markersize=3),
}


def bn_eval_modes_figure(columns: dict[str, np.ndarray], config: Config):
    """For each norm with running statistics: test error under each evaluation mode and the train error on the
    running averages and on batch statistics formed as in training, against the norm's batch, one row per model,
    one column per norm and protocol. The train errors' gap (the same images, running averages against batch
    statistics as in training) is the train/test mismatch of small batches. A mode these runs did not measure
    (example weighting for a norm without it, a table written before the mode existed) has no curve. Sizes whose
    statistic holds 1 or 2 values (an MLP's at 1 or 2 examples) are shaded: there BN is degenerate."""
    final = _fields_in_norm(final_epoch(columns))
    with_stats = ~np.isnan(final["test_acc_batch_stats"])
    norms = list(dict.fromkeys(final["norm"][with_stats]))
    models = list(dict.fromkeys(final["model"]))
    protocols = sorted(set(final["protocol"][with_stats]), key=lambda p: p != BASELINE) or [BASELINE]
    # A row per model, a column per norm and protocol: a one-protocol study's norms sit side by side, not stacked.
    columns_of = [(n, p) for n in norms for p in protocols]
    fig, axes = _grid(models, columns_of or [None], 4.2, 3.3)
    batches = np.unique(norm_batch(final))
    used = set()
    shape = data_input_shape(config)  # loaded once for every panel
    for (r, model), (c, (norm, protocol)) in itertools.product(enumerate(models), enumerate(columns_of)):
        rows = (final["model"] == model) & (final["protocol"] == protocol) & (final["norm"] == norm) & with_stats
        if not rows.any():
            continue
        ax = axes[r, c]
        used.add(ax)
        for i, (metric, label) in enumerate(BN_EVAL_MODES.items()):
            if np.isnan(final[metric][rows]).all():
                continue
            xs, mean, ci = _curve(final, rows, metric)
            ax.plot(xs, mean, color=f"C{i}", label=label, **BN_EVAL_STYLES[metric])
            _band(ax, xs, mean - ci, mean + ci, f"C{i}")
        _shade_degenerate(ax, batches, _per_example(model, config, shape))
        _batch_axes(ax, f"{norm}: {model}, {protocol} protocol", batches)
        ax.set_ylabel("error")
    # The title names the norms drawn: a config may sweep a batch-statistics norm other than BatchNorm.
    named = " and ".join(filter(None, [", ".join(norms[:-1]), *norms[-1:]])) or "no norm with running statistics"
    title = f"{config.name}: evaluation modes of {named} (final epoch, {over_seeds(final, '95% CI')})"
    _finish(fig, axes, title, used)
    return fig


def sync_bn_figure(columns: dict[str, np.ndarray], config: Config):
    """Data-parallel training: test error against the batch per device, one curve per norm and protocol (per
    device or synchronized statistics), mean and 95% CI over the seeds that did not diverge; one panel per
    model, wrapped into rows of `MAX_COLUMNS`."""
    last = final_epoch(columns)
    final = _fields_in_norm(last)
    batch_dependent = np.array([NORMS[name].batch_dependent for name in last["norm"]])
    models = list(dict.fromkeys(final["model"]))
    ncols = min(len(models), MAX_COLUMNS)
    shape = data_input_shape(config)  # loaded once for every panel
    fig, axes = _grid(range(math.ceil(len(models) / ncols)), range(ncols), 5.6 if ncols == 1 else 4.6, 3.6)
    series = list(dict.fromkeys(zip(final["norm"], final["protocol"])))
    used = set()
    for ax, model in zip(axes.flat, models):
        used.add(ax)
        for i, (norm, protocol) in enumerate(series):
            rows = (final["model"] == model) & (final["norm"] == norm) & (final["protocol"] == protocol)
            lost = int(final["diverged"][rows].sum())
            rows &= final["diverged"] == 0
            if not rows.any():
                continue
            xs = np.unique(final["batch_size"][rows])
            mean, ci = (
                np.array(v)
                for v in zip(*(mean_ci(1 - final["test_acc"][rows & (final["batch_size"] == x)]) for x in xs))
            )
            label = f"{norm}, {PROTOCOLS[protocol].statistics}" + (f" ({lost} diverged runs left out)" if lost else "")
            ax.plot(xs, mean, "-", color=f"C{i}", label=label)
            # Per device, BN's statistic at 2 examples a device holds 2 values: degenerate, whatever sync does there.
            sizes = np.array([norm_batch(final)[rows & (final["batch_size"] == x)][0] for x in xs])
            per_example = _per_example(model, config, shape) if batch_dependent[rows].any() else None
            _markers(ax, xs, mean, _degenerate(sizes, per_example), f"C{i}")
            _band(ax, xs, mean - np.nan_to_num(ci), mean + np.nan_to_num(ci), f"C{i}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(np.unique(final["batch_size"]), [str(b) for b in np.unique(final["batch_size"])])
        ax.minorticks_off()
        ax.set_xlabel(f"examples per device ({config.train.data_parallel} devices)")
        ax.set_ylabel("test error")
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3)
    _finish(fig, axes, f"{config.name}: final-epoch test error, {over_seeds(final, '95% CI')}", used)
    return fig


def final_accuracy_figure(columns: dict[str, np.ndarray], config: Config):
    """Final test accuracy of each norm (x), one marker per setting of the swept fields (the ViT's placement and
    warmup), mean and 95% CI over the seeds that did not diverge, at the values tuned on the validation set
    (summary.md lists them)."""
    import matplotlib.pyplot as plt

    final = final_epoch(columns)
    norms = list(dict.fromkeys(final["norm"]))
    fields = [k for k in swept_columns(final) if len(np.unique(final[k])) > 1]
    settings = list(dict.fromkeys(zip(*(final[k] for k in fields)))) if fields else [()]
    # At most 10 inches wide, 0.7 an x slot at least: 15 norms at 1.6 inches each made a strip that a page shrinks
    # to unreadable text; names that do not fit their slot are slanted instead.
    slot = min(1.6 * max(1, len(settings)) ** 0.5, max(0.7, 8.0 / len(norms)))
    fig, ax = plt.subplots(figsize=(slot * len(norms) + 2.0, 4.2 if slot < 1.2 else 3.6))
    width = 0.7 / len(settings)
    for i, setting in enumerate(settings):
        rows = np.all([final[k] == v for k, v in zip(fields, setting)], axis=0) & (final["diverged"] == 0)
        xs, means, cis = [], [], []
        for x, norm in enumerate(norms):
            values = final["test_acc"][rows & (final["norm"] == norm)]
            if len(values):
                mean, ci = mean_ci(values)
                xs.append(x + (i - (len(settings) - 1) / 2) * width)
                means.append(mean)
                cis.append(np.nan_to_num(ci))
        means, cis = np.array(means), np.array(cis)
        clipped = [np.minimum(cis, means), np.minimum(cis, 1 - means)]  # an accuracy stays in [0, 1]
        # One setting needs no legend: a key of one entry ("all runs") says nothing.
        label = setting_label(fields, setting) if fields else None
        ax.errorbar(xs, means, yerr=clipped, fmt="o", color=f"C{i}", capsize=3, markersize=4, label=label)
    slanted = dict(rotation=30, ha="right", rotation_mode="anchor") if slot < 1.2 else {}
    ax.set_xticks(range(len(norms)), [norm_label(n) for n in norms], **slanted)
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    legend_height = _legend_below(fig, [ax]) if fields else 0.0
    height = fig.get_size_inches()[1]
    tuned = f", {', '.join(config.report.tune)} tuned on validation" if config.report.tune else ""
    title = f"{config.name}: final test accuracy, {over_seeds(final, '95% CI')}{tuned}"
    ax.set_title(title, fontsize=10, wrap=True)
    fig.tight_layout(rect=(0, (legend_height + 0.15) / height, 1, 1))
    return fig


FIGURES = {
    "final_accuracy": final_accuracy_figure,
    "init_scale": init_scale_figure,
    "error_vs_batch": error_vs_batch_figure,
    "bn_eval_modes": bn_eval_modes_figure,
    "sync_bn": sync_bn_figure,
    "images_per_statistic": images_per_statistic_figure,
    "landscape": landscape_figure,
}


def figure_bytes(draw, data, config: Config, format: str = "png", dpi: int = 110) -> bytes:
    """The figure that `draw` (a function of `FIGURES` or `DIAGNOSTICS_FIGURES`) makes of `data`, as the bytes
    of a `format` file (one of `FORMATS`); `dpi` sets a PNG's resolution (PDF and SVG are vector graphics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(data, config)
    buffer = io.BytesIO()
    # No creation date in the metadata, so the same results always give the same bytes.
    metadata = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[format]
    fig.savefig(buffer, format=format, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return buffer.getvalue()


def drawings(out: Path, config: Config, columns, names: tuple[str, ...] | None = None) -> list[tuple]:
    """(name, figure function, its data) for the figures a results directory's config names (or `names`), those
    of its layer diagnostics among them; with diagnostics and none of theirs named, `LAYER_DEFAULT`'s. The
    figures show the runs that summary.md reports: with `report.tune`, those at the values chosen on the
    validation set, and of the layer diagnostics only the runs that did not diverge."""
    tuned, choices = tune(columns, config.report.tune)
    wanted = names or config.figures
    found = [(name, FIGURES[name], tuned) for name in wanted if name in FIGURES]
    layer_figures = [name for name in wanted if name in DIAGNOSTICS_FIGURES]
    if config.train.diagnostics_at and (layer_figures or names is None):
        layers = reported(read_diagnostics(Path(out) / DIAGNOSTICS), tuned, choices)
        found += [(name, DIAGNOSTICS_FIGURES[name], layers) for name in layer_figures or LAYER_DEFAULT]
    return found


def draw_figures(out: Path, names: tuple[str, ...] | None = None, config: Config | None = None,
                 format: str = "png", dpi: int = 110, input_shape: tuple[int, ...] | None = None,
                 columns: dict[str, np.ndarray] | None = None) -> list[Path]:  # fmt: skip
    """Draw the figures of `drawings` (as `format` files, `dpi` for PNG), and the summary, into a results
    directory. `config` and `input_shape` (one example's) stand in for its config.json, for a run that writes
    that last; `columns`, for its metrics.csv."""
    config = config or read_config(out)
    columns = read_metrics(out, config) if columns is None else columns
    written = []
    for name, draw, data in drawings(out, config, columns, names):
        path = Path(out) / f"{name}.{format}"
        atomic_write(path, figure_bytes(draw, data, config, format, dpi))
        written.append(path)
    written.append(write_summary(Path(out), columns, config, input_shape))
    return written


def redraw(out: Path, format: str = "png", dpi: int = 110, trust_edits: bool = False,
           revised: Config | None = None) -> list[Path]:  # fmt: skip
    """`normbench plot`: draw a results directory's figures and summary again from its data, read and written
    with the directory held against a swap (`normbench.results.reader`), and sign what was drawn in its manifest.
    `revised`: first take its reporting sections (`revise_reporting`). Returns the files written."""
    if not DPI[0] <= dpi <= DPI[1]:
        raise UserError(f"--dpi {dpi}: figures are drawn at {DPI[0]} to {DPI[1]} dots per inch")
    with reading(out, trust_edits) as results, writing_into(out):
        draw = functools.partial(draw_figures, results.path, format=format, dpi=dpi,
                                 input_shape=results.input_shape, columns=results.columns)  # fmt: skip
        if revised is None:
            written = draw(config=results.config)
        else:
            written = revise_reporting(out, results.config, results.meta, revised, lambda c: draw(config=c))
        # An edited config.json stays flagged: rewriting it does not make it the run's.
        resign(out, [path.name for path in written if path.name not in set(results.edited) & set(DATA)])
    return written


@contextlib.contextmanager
def writing_into(out: Path):
    """A write into a results directory that the machine refuses (read-only, full) as one line."""
    try:
        yield
    except OSError as e:
        raise refused_write(f"cannot write into {str(out)!r}", e) from e
