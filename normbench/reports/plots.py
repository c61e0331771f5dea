"""Figures drawn from a results directory's `metrics.csv` and `config.json` alone: no figure needs retraining.

`FIGURES` maps the names a config lists in `figures` to functions (columns, config) -> matplotlib Figure.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from normbench.config import Config
from normbench.core.axes import swept_columns
from normbench.core.diagnostics import DIAGNOSTICS, read_diagnostics
from normbench.reports.layer_figures import FIGURES as DIAGNOSTICS_FIGURES
from normbench.reports.summary import write_summary
from normbench.results.stats import final_epoch, mean_ci, norm_batch, per_run
from normbench.results.store import atomic_write, read_config, read_metrics

LINESTYLES = {"batch": "-", "none": "--"}


def _series_keys(columns) -> tuple[list[str], list[tuple]]:
    """One curve per norm, split further by batch size and learning rate only where those vary."""
    varying = ("model", "protocol", "batch_size", "learning_rate", *swept_columns(columns))
    keys = ["norm"] + [k for k in varying if len(np.unique(columns[k])) > 1]
    rows = zip(*(columns[k] for k in keys))
    return keys, sorted(set(rows), key=lambda r: tuple(str(v) for v in r))


def _label(keys, key) -> str:
    parts = [str(key[0])] + [f"{k.split('_')[0]}={v}" for k, v in zip(keys[1:], key[1:])]
    return " ".join(parts)


def _fields_in_norm(final: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`final` whose `norm` column also names the swept fields' values ("batch norm.epsilon=0.001"), for
    figures that draw one curve or panel per norm."""
    keys = ["norm", *swept_columns(final)]
    return {**final, "norm": np.asarray([_label(keys, key) for key in zip(*(final[k] for k in keys))])}


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
    colors = {key: f"C{i}" for i, key in enumerate(series)}
    epochs = np.unique(columns["epoch"])
    legend = {}  # label -> line, from whichever panel first draws it
    for ax, scale in zip(axes.flat, scales):
        at_scale = columns["init_scale"] == scale
        diverged = 0
        for key in series:
            rows = at_scale & np.all([columns[k] == v for k, v in zip(keys, key)], axis=0)
            acc, flags = per_run(columns, rows, "train_acc"), per_run(columns, rows, "diverged")
            alive = flags[:, -1] == 0
            style = LINESTYLES.get(str(key[0]), "-.")
            if alive.any():
                label = _label(keys, key)
                (legend[label],) = ax.plot(epochs, acc[alive].mean(0), style, color=colors[key], label=label)
                ax.fill_between(epochs, acc[alive].min(0), acc[alive].max(0), color=colors[key], alpha=0.2, lw=0)
            for run in np.flatnonzero(~alive):
                end = int(np.argmax(flags[run])) + 1
                ax.plot(epochs[:end], acc[run, :end], ":", color=colors[key], lw=0.8)
                marker = "diverged (loss non-finite)"
                (legend[marker],) = ax.plot(epochs[end - 1], acc[run, end - 1], "x", color="0.3", label=marker)
            diverged += int((~alive).sum())
        ax.set_title(f"W: {scale:.2g}" + (f" ({diverged} diverged: x)" if diverged else ""), fontsize=10)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(scales) :]:
        ax.set_visible(False)
    for column in axes.T:  # the lowest panel drawn in each column, which is not always in the last row
        lowest = [ax for ax in column if ax.get_visible()][-1]
        lowest.set_xlabel("epochs")
        lowest.tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("train accuracy")
    n_seeds = len(np.unique(columns["seed"]))
    axes.flat[0].legend(handles=list(legend.values()), loc="lower right", fontsize=8)
    width, height = fig.get_size_inches()
    fig.suptitle(f"{config.name}: mean of {n_seeds} seeds, band = min..max over seeds", fontsize=11,
                 y=1 - 0.1 / height)  # fmt: skip
    # Margins fixed in inches, which the shared axes make possible: tight_layout would measure the labels of
    # every panel, a third of this figure's drawing time and part of every run's wall time.
    fig.subplots_adjust(left=0.65 / width, right=1 - 0.1 / width, bottom=0.5 / height, top=1 - 0.7 / height,
                        wspace=0.08, hspace=0.32)  # fmt: skip
    return fig


def _panels(final):
    """One panel per (model, protocol) present in the results."""
    return sorted(set(zip(final["model"], final["protocol"])), key=lambda p: (str(p[0]), p[1] != "sgd"))


def _curve(final, rows, metric):
    """x = the norm's batch, y = mean and 95% CI over seeds of 1 - metric, over the runs that did not diverge
    (a batch where every run diverged has no point)."""
    rows = rows & (final["diverged"] == 0)
    xs = np.unique(norm_batch(final)[rows])
    stats = [mean_ci(1 - final[metric][rows & (norm_batch(final) == x)]) for x in xs]
    mean, ci = (np.array(v) for v in zip(*stats))
    return xs, mean, np.nan_to_num(ci)


def _batch_axes(ax, title):
    ax.set_xscale("log", base=2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("examples per BatchNorm statistic (batch, or ghost group)")
    ax.grid(alpha=0.3)


def error_vs_batch_figure(columns: dict[str, np.ndarray], config: Config):
    """Test error against the norm's batch, one curve per norm, one panel per model and protocol (GN paper,
    Figure 1). Mean over seeds with a 95% confidence band; running-average evaluation for BN. A norm that does
    not depend on the batch has no ghost cell: its sgd run at the same SGD batch is drawn flat instead."""
    import matplotlib.pyplot as plt

    final = _fields_in_norm(final_epoch(columns))
    panels = _panels(final)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    norms = list(dict.fromkeys(final["norm"]))
    for ax, (model, protocol) in zip(axes.flat, panels):
        here = (final["model"] == model) & (final["protocol"] == protocol)
        for i, norm in enumerate(norms):
            rows = here & (final["norm"] == norm)
            if rows.any():
                xs, mean, ci = _curve(final, rows, "test_acc")
                lost = int(final["diverged"][rows].sum())
                label = f"{norm} ({lost} diverged runs left out)" if lost else norm
                ax.plot(xs, mean, "o-", color=f"C{i}", label=label, markersize=4)
                ax.fill_between(xs, mean - ci, mean + ci, color=f"C{i}", alpha=0.2, linewidth=0)
            elif protocol == "ghost":
                sgd = (final["model"] == model) & (final["protocol"] == "sgd") & (final["norm"] == norm)
                sgd &= final["batch_size"] == final["batch_size"][here].max()
                if sgd.any():
                    mean, ci = mean_ci(1 - final["test_acc"][sgd])
                    xs = np.unique(norm_batch(final)[here])
                    ax.plot(xs, np.full(len(xs), mean), "--", color=f"C{i}", label=f"{norm} (no ghost batch)")
                    ax.fill_between(
                        xs, mean - np.nan_to_num(ci), mean + np.nan_to_num(ci), color=f"C{i}", alpha=0.15, linewidth=0
                    )
        _batch_axes(ax, f"{model}, {protocol} protocol")
        ax.set_ylabel("test error")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{config.name}: final-epoch test error, mean and 95% CI over {len(np.unique(final['seed']))} seeds",
        fontsize=11,
        wrap=True,  # a single panel is narrower than the title
    )
    fig.tight_layout()
    return fig


BN_EVAL_MODES = {
    "test_acc": "running averages (EMA)",
    "test_acc_batch_stats": "test batch's own statistics",
    "test_acc_precise": "PreciseBN statistics",
    "train_acc": "train error (running averages)",
}


def bn_eval_modes_figure(columns: dict[str, np.ndarray], config: Config):
    """For each norm with running statistics: test error under its three evaluation modes and the train error,
    against the norm's batch. The gap between the curves is the train/test inconsistency of small batches."""
    import matplotlib.pyplot as plt

    final = _fields_in_norm(final_epoch(columns))
    with_stats = ~np.isnan(final["test_acc_batch_stats"])
    present = set(zip(final["model"][with_stats], final["protocol"][with_stats], final["norm"][with_stats]))
    panels = [
        (m, p, n) for m, p in _panels(final) for n in dict.fromkeys(final["norm"][with_stats]) if (m, p, n) in present
    ]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.6 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, (model, protocol, norm) in zip(axes.flat, panels):
        rows = (final["model"] == model) & (final["protocol"] == protocol) & (final["norm"] == norm)
        for i, (metric, label) in enumerate(BN_EVAL_MODES.items()):
            xs, mean, ci = _curve(final, rows, metric)
            ax.plot(xs, mean, "o:" if metric == "train_acc" else "o-", color=f"C{i}", label=label, markersize=4)
            ax.fill_between(xs, mean - ci, mean + ci, color=f"C{i}", alpha=0.2, linewidth=0)
        _batch_axes(ax, f"{norm}: {model}, {protocol} protocol")
        ax.set_ylabel("error")
        ax.legend(fontsize=7)
    title = f"{config.name}: BatchNorm's evaluation modes (final epoch, 95% CI over seeds)"
    fig.suptitle(title, fontsize=11, wrap=True)
    fig.tight_layout()
    return fig


def sync_bn_figure(columns: dict[str, np.ndarray], config: Config):
    """Data-parallel training: test error against the batch per device, one curve per norm and protocol (per
    device or synchronized statistics), mean and 95% CI over the seeds that did not diverge; one panel per
    model."""
    import matplotlib.pyplot as plt

    final = _fields_in_norm(final_epoch(columns))
    models = list(dict.fromkeys(final["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.9), squeeze=False)
    series = list(dict.fromkeys(zip(final["norm"], final["protocol"])))
    for ax, model in zip(axes.flat, models):
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
            statistics = "synchronized" if protocol == "sync" else "per device"
            label = f"{norm}, {statistics}" + (f" ({lost} diverged runs left out)" if lost else "")
            ax.plot(xs, mean, "o-", color=f"C{i}", label=label, markersize=4)
            ax.fill_between(xs, mean - np.nan_to_num(ci), mean + np.nan_to_num(ci), color=f"C{i}", alpha=0.2, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(np.unique(final["batch_size"]), [str(b) for b in np.unique(final["batch_size"])])
        ax.set_xlabel(f"examples per device ({config.train.data_parallel} devices)")
        ax.set_ylabel("test error")
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{config.name}: final-epoch test error, mean and 95% CI over {len(np.unique(final['seed']))} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


FIGURES = {
    "init_scale": init_scale_figure,
    "error_vs_batch": error_vs_batch_figure,
    "bn_eval_modes": bn_eval_modes_figure,
    "sync_bn": sync_bn_figure,
}


def figure_png(draw, data, config: Config) -> bytes:
    """The figure that `draw` (a function of `FIGURES` or `DIAGNOSTICS_FIGURES`) makes of `data`, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(data, config)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def drawings(out: Path, config: Config, columns, names: tuple[str, ...] | None = None) -> list[tuple]:
    """(name, figure function, its data) for the figures a results directory's config names (or `names`), then
    its layer diagnostics' figures if it has any."""
    found = [(name, FIGURES[name], columns) for name in names or config.figures]
    if names is None and config.train.diagnostics_at:
        layers = read_diagnostics(Path(out) / DIAGNOSTICS)
        found += [(name, draw, layers) for name, draw in DIAGNOSTICS_FIGURES.items()]
    return found


def draw_figures(out: Path, names: tuple[str, ...] | None = None, config: Config | None = None) -> list[Path]:
    """Draw the figures of `drawings`, and the summary, into a results directory. `config` stands in for its
    config.json, for a run that writes that last."""
    config = config or read_config(out)
    columns = read_metrics(out)
    written = []
    for name, draw, data in drawings(out, config, columns, names):
        path = Path(out) / f"{name}.png"
        atomic_write(path, figure_png(draw, data, config))
        written.append(path)
    written.append(write_summary(Path(out), columns, config))
    return written
