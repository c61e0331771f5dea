"""Figures drawn from a results directory's `metrics.csv` and `config.json` alone: no figure needs retraining.

`FIGURES` maps the names a config lists in `figures` to functions (columns, config) -> matplotlib Figure.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from normbench.config import Config
from normbench.results import atomic_write, read_config, read_metrics

LINESTYLES = {"batch": "-", "none": "--"}


def _series_keys(columns) -> tuple[list[str], list[tuple]]:
    """One curve per norm, split further by batch size and learning rate only where those vary."""
    keys = ["norm"] + [k for k in ("batch_size", "learning_rate") if len(np.unique(columns[k])) > 1]
    rows = zip(*(columns[k] for k in keys))
    return keys, sorted(set(rows), key=lambda r: tuple(str(v) for v in r))


def _label(keys, key) -> str:
    parts = [str(key[0])] + [f"{k.split('_')[0]}={v:g}" for k, v in zip(keys[1:], key[1:])]
    return " ".join(parts)


def init_scale_figure(columns: dict[str, np.ndarray], config: Config):
    """The textbook's 4x4 grid: train accuracy against epochs, one panel per init scale, mean over seeds with
    a band from the worst to the best seed."""
    import matplotlib.pyplot as plt

    scales = sorted(np.unique(columns["init_scale"]), reverse=True)
    ncols = math.ceil(math.sqrt(len(scales)))
    nrows = math.ceil(len(scales) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), sharex=True, sharey=True, squeeze=False)
    keys, series = _series_keys(columns)
    colors = {key: f"C{i}" for i, key in enumerate(series)}
    for ax, scale in zip(axes.flat, scales):
        at_scale = columns["init_scale"] == scale
        diverged = 0
        for key in series:
            rows = at_scale & np.all([columns[k] == v for k, v in zip(keys, key)], axis=0)
            epochs = np.unique(columns["epoch"][rows])
            acc = np.stack([columns["train_acc"][rows & (columns["epoch"] == e)] for e in epochs], axis=1)
            diverged += int(columns["diverged"][rows & (columns["epoch"] == epochs[-1])].sum())
            style = LINESTYLES.get(str(key[0]), "-.")
            ax.plot(epochs, acc.mean(0), style, color=colors[key], label=_label(keys, key))
            ax.fill_between(epochs, acc.min(0), acc.max(0), color=colors[key], alpha=0.2, linewidth=0)
        ax.set_title(f"W: {scale:.2g}" + (f" ({diverged} diverged)" if diverged else ""), fontsize=10)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(scales):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epochs")
    for ax in axes[:, 0]:
        ax.set_ylabel("train accuracy")
    n_seeds = len(np.unique(columns["seed"]))
    axes.flat[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{config.name}: mean of {n_seeds} seeds, band = min..max over seeds", fontsize=11)
    fig.tight_layout()
    return fig


FIGURES = {"init_scale": init_scale_figure}


def draw_figures(out: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Draw the figures a results directory's config names (or `names`) into that directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = read_config(out)
    columns = read_metrics(out)
    written = []
    for name in names or config.figures:
        fig = FIGURES[name](columns, config)
        path = Path(out) / f"{name}.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        atomic_write(path, buffer.getvalue())
        written.append(path)
    return written
