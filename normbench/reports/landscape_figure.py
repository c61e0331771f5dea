"""The loss-landscape figure (`normbench.core.landscape`), Santurkar et al.'s Figure 4, drawn from metrics.csv."""

from __future__ import annotations

import numpy as np

from normbench.config import Config
from normbench.core.axes import key_columns
from normbench.reports.labels import norm_label, seeds_text

# (title, y label, the two columns whose means over seeds bound the shaded range over step sizes; a single column
# is drawn as a line, its band the range over seeds)
PANELS = (
    ("loss landscape", "loss along the step", ("landscape_loss_min", "landscape_loss_max")),
    ("gradient predictiveness", "‖∇L(θ - ηg) - ∇L(θ)‖", ("landscape_grad_change_min", "landscape_grad_change_max")),
    ("effective β-smoothness", "max ‖Δ∇L‖ / ‖ηg‖", ("landscape_beta",)),
)


def _rows(columns) -> list[tuple[tuple[str, ...], tuple]]:
    """One figure row per combination of the run axes other than norm and seed that vary in the table."""
    keys = tuple(k for k in key_columns(columns) if k not in ("norm", "seed") and len(np.unique(columns[k])) > 1)
    combos = sorted(set(zip(*(columns[k] for k in keys))))
    return [(keys, combo) for combo in combos] or [((), ())]


def landscape_figure(columns: dict[str, np.ndarray], config: Config):
    """Per norm, over training: the range over step sizes of the loss and of the gradient's change along the
    gradient (shaded between the means over seeds of its ends), and the effective β-smoothness (mean over seeds,
    shaded from the lowest to the highest seed); one row per learning rate (or other varying axis). Runs that
    diverged are left out."""
    import matplotlib.pyplot as plt

    columns = {**columns, "landscape_loss_max": columns["landscape_loss_min"] + columns["landscape_loss_range"]}
    rows = _rows(columns)
    fig, axes = plt.subplots(len(rows), len(PANELS), figsize=(4.2 * len(PANELS), 3.0 * len(rows) + 0.9),
                             squeeze=False)  # fmt: skip
    alive = columns["diverged"] == 0
    # The epoch's value is taken at its first step, before it: epoch 1 is at init.
    step_label = "epoch (probed at its first step)"
    for (keys, combo), row in zip(rows, axes):
        here = alive & np.all([columns[k] == v for k, v in zip(keys, combo)], axis=0)
        for i, norm in enumerate(dict.fromkeys(columns["norm"])):
            runs = here & (columns["norm"] == norm)
            epochs = np.unique(columns["epoch"][runs])
            for ax, (_, _, fields) in zip(row, PANELS):
                per_seed = [np.array([columns[f][runs & (columns["epoch"] == e)] for e in epochs]) for f in fields]
                if len(fields) == 1:
                    (values,) = per_seed
                    ax.plot(epochs, values.mean(1), color=f"C{i}", label=norm_label(norm))
                    ax.fill_between(epochs, values.min(1), values.max(1), color=f"C{i}", alpha=0.25, linewidth=0)
                    continue
                low, high = (v.mean(1) for v in per_seed)
                ax.fill_between(epochs, low, high, color=f"C{i}", alpha=0.35, linewidth=0, label=norm_label(norm))
                ax.plot(epochs, low, color=f"C{i}", lw=0.6)
                ax.plot(epochs, high, color=f"C{i}", lw=0.6)
        where = ", ".join(f"{k.replace('_', ' ')} {v:g}" if not isinstance(v, str) else v for k, v in zip(keys, combo))
        for ax, (title, ylabel, _) in zip(row, PANELS):
            ax.set_title(f"{title}" + (f" ({where})" if where else ""), fontsize=10)
            ax.set_ylabel(ylabel)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(step_label)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    steps = ", ".join(f"{s:g}" for s in config.train.landscape_steps)
    n_seeds = len(np.unique(columns["seed"]))
    fig.suptitle(f"{config.name}: along the gradient g at η = ({steps}) x learning rate, on the step's batch; "
                 f"mean of {seeds_text(n_seeds)}", fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
