"""Compare sweeps from their results directories alone: `normbench compare DIR1 DIR2 [DIR3 ...]`.

Rows: every configuration (model, norm, protocol, norm_batch, init_scale, learning_rate and any swept config
field) that any of the sweeps ran; `norm_batch` is the number of examples a batch statistic sees (the
`ghost_size` column). Columns: the final-epoch metric's mean over seeds in each directory, then, for each
directory after the first, its paired difference from the first: the mean over the seeds that both ran of the
per-seed difference, with the half-width of its 95% Student-t interval. A seed fixes a run's initial weights and
minibatches, so pairing by seed takes out the seed-to-seed spread that both sweeps share.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from normbench.api import load
from normbench.config import Config, from_dict, get_field
from normbench.core.axes import swept_columns
from normbench.errors import UserError
from normbench.results.stats import mean_ci
from normbench.results.swap import settle

KEYS = ["model", "norm", "protocol", "norm_batch", "init_scale", "learning_rate"]
METRICS = ("test_acc", "train_acc", "test_loss", "train_loss", "test_acc_batch_stats", "test_acc_precise",
           "train_acc_batch_stats", "test_acc_example_weighted")  # fmt: skip
# A paired difference whose interval holds 0 is labelled so: the seeds cannot tell it from no difference.
NOT_SIGNIFICANT = "not significant"


def final_epoch(results_dir) -> pd.DataFrame:
    """The last epoch's rows of a results directory, with its config in `attrs["config"]`."""
    settle(results_dir)  # a replacement that a kill stopped halfway (`normbench.results.swap`)
    if not Path(results_dir).is_dir():
        raise UserError(f"{str(results_dir)!r} does not exist")
    df = load(results_dir)
    df = df[df.epoch == df.epoch.max()].copy()
    df["norm_batch"] = df.ghost_size
    return df


def labels(dirs) -> list[str]:
    """Each directory's name, or its whole path where two names are the same."""
    names = [Path(d).name for d in dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, dirs)]


def _tables(dirs) -> tuple[dict[str, pd.DataFrame], list[str]]:
    if len(dirs) < 2:
        raise UserError("compare needs at least two results directories")
    tables = dict(zip(labels(dirs), map(final_epoch, dirs)))
    swept = [column for df in tables.values() for column in swept_columns(df.columns)]
    keys = KEYS + list(dict.fromkeys(swept))
    for df in tables.values():  # a field one sweep did not vary is its config's value in every run
        for key in keys:
            if key not in df:
                df[key] = get_field(from_dict(Config, df.attrs["config"]), key)
    return tables, keys


def compare(dirs, metric: str = "test_acc") -> pd.DataFrame:
    """One row per configuration; columns ("mean", label) per directory, then (f"{label} - {first}", part) for
    each later directory, part in "diff" (mean paired difference), "±95%" (its interval's half-width; NaN for a
    single seed), "seeds" (how many were paired) and "note" ("not significant" where the interval holds 0)."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; compare takes {', '.join(METRICS)}")
    tables, keys = _tables(dirs)
    per_seed = {label: df.groupby(keys + ["seed"])[metric].mean() for label, df in tables.items()}
    first, *others = tables
    columns = {("mean", label): df.groupby(keys)[metric].mean() for label, df in tables.items()}
    for label in others:
        paired = pd.concat([per_seed[first], per_seed[label]], axis=1, join="inner", keys=["a", "b"])
        differences = (paired.b - paired.a).groupby(level=keys)
        ci = differences.apply(lambda d: mean_ci(d.to_numpy()))
        name = f"{label} - {first}"
        # metrics.csv holds 7 significant digits: finer differences are the float noise of averaging.
        columns[(name, "diff")] = ci.map(lambda c: c[0]).round(6)
        columns[(name, "±95%")] = ci.map(lambda c: c[1]).round(6)
        columns[(name, "seeds")] = differences.size()
    table = pd.concat(columns, axis=1).sort_index()
    for label in others:
        name = f"{label} - {first}"
        holds_zero = (table[(name, "diff")].abs() <= table[(name, "±95%")]).to_numpy()
        table[(name, "note")] = [NOT_SIGNIFICANT if zero else "" for zero in holds_zero]
        table[(name, "seeds")] = table[(name, "seeds")].fillna(0).astype(int)
    return table[[c for c in columns if c[0] == "mean"] + [(f"{label} - {first}", part) for label in others
                                                           for part in ("diff", "±95%", "seeds", "note")]]  # fmt: skip


def compare_text(table: pd.DataFrame) -> str:
    shown = ("display.max_rows", None, "display.max_columns", None, "display.width", 0)
    with pd.option_context(*shown, "display.float_format", "{:.4g}".format):
        return table.to_string(na_rep="-")


def plot(dirs, metric: str, path: Path) -> Path:
    """The metric against norm_batch (or init_scale when no sweep varies the batch), one panel per model and
    protocol, one line style per directory, one colour per norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables, _ = _tables(dirs)
    every = pd.concat(tables.values())
    x = "norm_batch" if every.norm_batch.nunique() > 1 else "init_scale"
    panels = sorted(set(zip(every.model, every.protocol)))
    norms = list(dict.fromkeys(every.norm))
    styles = ("o-", "s--", "^:", "d-.", "v-", "x--")
    columns = min(len(panels), 2)  # rows of two panels: the figure stays readable scaled to a page's width
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (model, protocol) in zip(axes.flat, panels):
        for i, (label, df) in enumerate(tables.items()):
            here = df[(df.model == model) & (df.protocol == protocol)]
            for norm, rows in here.groupby("norm"):
                curve = rows.groupby(x)[metric].mean()
                ax.plot(curve.index, curve.values, styles[i % len(styles)], color=f"C{norms.index(norm)}",
                        label=f"{norm} ({label})", markersize=4)  # fmt: skip
        ax.set_xscale("log", base=2 if x == "norm_batch" else 10)
        ax.set_title(f"{model}, {protocol} protocol", fontsize=10)
        ax.set_xlabel("examples per batch statistic" if x == "norm_batch" else "init std")
        ax.set_ylabel(f"final {metric}, mean over seeds")
        ax.grid(alpha=0.3)
    legend = {}  # one entry per line, whichever panels it appears in
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
