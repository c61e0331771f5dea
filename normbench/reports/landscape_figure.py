"""The loss-landscape figure (`normbench.core.landscape`), Santurkar et al.'s Figure 4, drawn from metrics.csv."""

from __future__ import annotations

import numpy as np

from normbench.config import Config
from normbench.core.axes import key_columns
from normbench.reports.labels import norm_label, seeds_text

# (title, y label, the two columns whose means over seeds bound the shaded range over step sizes; a single column
# is drawn as a line, its band the range over seeds, what the band is): the two kinds of band mean different things,
# and each panel says which.
OVER_STEPS = "band: range over η of the means over seeds"
OVER_SEEDS = "line: mean over seeds; band: range over seeds"
PANELS = (
    ("loss landscape", "loss along the step", ("landscape_loss_min", "landscape_loss_max"), OVER_STEPS),
    (
        "gradient predictiveness",
        "‖∇L(θ - ηg) - ∇L(θ)‖",
        ("landscape_grad_change_min", "landscape_grad_change_max"),
        OVER_STEPS,
    ),
    ("effective β-smoothness", "max ‖Δ∇L‖ / ‖ηg‖", ("landscape_beta",), OVER_SEEDS),
)
# What a row draws the probes against: the epoch, and the epoch's training loss, where a network that trains faster
# reaches a loss sooner and its probes are compared with the other's at the same loss
# (`normbench.results.matched_loss`). High losses on the left: training runs from left to right in both.
X_AXES = (
    ("epoch", "epoch (probed at its first step)"),
    ("train_loss", "the epoch's training loss (geometric mean over seeds)"),
)


def _rows(columns) -> list[tuple[tuple[str, ...], tuple]]:
    """One figure row per combination of the run axes other than norm and seed that vary in the table."""
    keys = tuple(k for k in key_columns(columns) if k not in ("norm", "seed") and len(np.unique(columns[k])) > 1)
    combos = sorted(set(zip(*(columns[k] for k in keys))))
    return [(keys, combo) for combo in combos] or [((), ())]


def landscape_figure(columns: dict[str, np.ndarray], config: Config):
    """Per norm, over training: the range over step sizes of the loss and of the gradient's change along the
    gradient (shaded between the means over seeds of its ends), and the effective β-smoothness (mean over seeds,
    shaded from the lowest to the highest seed); per learning rate (or other varying axis) one row against the
    epoch and one against the epoch's training loss, where the networks' probes meet at equal losses. Runs that
    diverged are left out."""
    import matplotlib.pyplot as plt

    columns = {**columns, "landscape_loss_max": columns["landscape_loss_min"] + columns["landscape_loss_range"]}
    rows = [(keys, combo, x) for keys, combo in _rows(columns) for x in X_AXES]
    fig, axes = plt.subplots(len(rows), len(PANELS), figsize=(4.2 * len(PANELS), 3.3 * len(rows) + 0.9),
                             squeeze=False)  # fmt: skip
    alive = columns["diverged"] == 0
    for (keys, combo, (x, x_label)), row in zip(rows, axes):
        here = alive & np.all([columns[k] == v for k, v in zip(keys, combo)], axis=0)
        for i, norm in enumerate(dict.fromkeys(columns["norm"])):
            runs = here & (columns["norm"] == norm)
            epochs = np.unique(columns["epoch"][runs])
            xs = np.array([np.exp(np.log(columns[x][runs & (columns["epoch"] == e)]).mean()) for e in epochs])
            for ax, (_, _, fields, _) in zip(row, PANELS):
                per_seed = [np.array([columns[f][runs & (columns["epoch"] == e)] for e in epochs]) for f in fields]
                if len(fields) == 1:
                    (values,) = per_seed
                    ax.plot(xs, values.mean(1), color=f"C{i}", label=norm_label(norm))
                    ax.fill_between(xs, values.min(1), values.max(1), color=f"C{i}", alpha=0.25, linewidth=0)
                    continue
                low, high = (v.mean(1) for v in per_seed)
                ax.fill_between(xs, low, high, color=f"C{i}", alpha=0.35, linewidth=0, label=norm_label(norm))
                ax.plot(xs, low, color=f"C{i}", lw=0.6)
                ax.plot(xs, high, color=f"C{i}", lw=0.6)
        where = ", ".join(f"{k.replace('_', ' ')} {v:g}" if not isinstance(v, str) else v for k, v in zip(keys, combo))
        for ax, (title, ylabel, _, band) in zip(row, PANELS):
            ax.set_title(f"{title}" + (f" ({where})" if where else "") + f"\n{band}", fontsize=10)
            ax.set_ylabel(ylabel)
            ax.set_xlabel(x_label, fontsize=9)
            ax.set_yscale("log")
            if x != "epoch":
                ax.set_xscale("log")
                ax.invert_xaxis()
            ax.grid(alpha=0.3)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    steps = ", ".join(f"{s:g}" for s in config.train.landscape_steps)
    n_seeds = len(np.unique(columns["seed"]))
    fig.suptitle(f"{config.name}: along the gradient g at η = ({steps}) x learning rate, on the step's batch; "
                 f"{seeds_text(n_seeds)}", fontsize=11)  # fmt: skip
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.15 / height))  # inches for the legend below, the title above
    return fig
