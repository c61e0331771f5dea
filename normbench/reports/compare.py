"""Compare sweeps from their results directories alone: `normbench compare DIR1 DIR2 [DIR3 ...]`.

A configuration is a model, norm, protocol, norm_batch (the examples a batch statistic sees: the `ghost_size`
column), init_scale, learning_rate and any swept config field. For each configuration and directory, one row (the
long format, which `--csv FILE` writes): the final-epoch metric as summary.md gives it, the mean over the runs
that did not diverge with the half-width of its 95% Student-t interval, and how many runs diverged. Each directory
after the first also gets its paired difference from the first: the mean over the seeds that both ran without
diverging of the per-seed difference, with its interval. A seed fixes a run's initial weights and minibatches, so
pairing by seed takes out the seed-to-seed spread that both sweeps share.

Only the configurations that every directory ran are compared (`--all`: every one that any ran). A config field
that no column shows and in which the directories differ (`train.epochs`, `data.source`, ...) is warned of: every
row compares that difference too.
"""

from __future__ import annotations

import itertools
import os
import string
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from normbench.config import get_field, to_dict
from normbench.core.axes import swept_columns
from normbench.errors import UserError, refused_write
from normbench.reports.plots import FORMATS
from normbench.results.reader import Results, ResultsWarning, read_results
from normbench.results.stats import final_epoch, mean_ci
from normbench.results.store import atomic_write, differences

KEYS = ["model", "norm", "protocol", "norm_batch", "init_scale", "learning_rate"]
METRICS = ("test_acc", "train_acc", "test_loss", "train_loss", "test_acc_batch_stats", "test_acc_precise",
           "train_acc_batch_stats", "test_acc_example_weighted")  # fmt: skip
# Config sections whose differences the rows show (the sweep's grid) or that do not change a run.
SHOWN_BY_ROWS = ("name", "sweep", "report", "figures")
WIDTH = 120  # a terminal's columns: the table wraps into blocks of columns beyond it


@dataclass(frozen=True)
class Sweeps:
    """The results directories to compare, each labelled by a letter, and their final epochs' rows with a column
    per key (`keys`)."""

    labels: list[str]
    paths: list[Path]
    finals: list[pd.DataFrame]
    keys: list[str]


@dataclass(frozen=True)
class Comparison:
    sweeps: Sweeps
    metric: str
    unit: str  # "percent" for accuracies, as summary.md shows them, else "" (the metric's own)
    table: pd.DataFrame  # one row per configuration and directory (the module docstring)
    left_out: int  # configurations that only some directories ran, left out (unless `every`)


def read_sweeps(dirs, trust_edits: bool = False) -> Sweeps:
    """Read each directory (`normbench.results.reader`); warns of a directory named twice and of config fields
    that differ between the directories where no column shows it."""
    if len(dirs) < 2:
        raise UserError("compare needs at least two results directories")
    paths = [Path(d) for d in dirs]
    results = [read_results(path, trust_edits) for path in paths]
    labels = list(string.ascii_uppercase[: len(paths)]) if len(paths) <= 26 else [str(i + 1) for i in range(len(paths))]
    keys = KEYS + list(dict.fromkeys(c for r in results for c in swept_columns(r.columns)))
    finals = [_final(r, keys) for r in results]
    if any(df.duplicated([*keys, "seed"]).any() for df in finals):  # SGD batches sharing their statistic's size
        keys.insert(keys.index("norm_batch"), "batch_size")
    _warn_same_directory(paths, labels)
    _warn_unshown_differences(results, labels, keys)
    return Sweeps(labels, paths, finals, keys)


def _final(results: Results, keys: list[str]) -> pd.DataFrame:
    """The final epoch's rows, with a field that this sweep did not vary as its config's value in every row,
    and every key as a value that compares across directories (`_comparable`)."""
    final = final_epoch(results.columns)
    df = pd.DataFrame({name: final[name] for name in final if final[name].ndim == 1})
    df["norm_batch"] = df.ghost_size
    for key in keys:
        values = df[key] if key in df else [get_field(results.config, key)] * len(df)
        df[key] = [_comparable(v) for v in values]
    df["batch_size"] = [_comparable(v) for v in df.batch_size]
    return df


def _comparable(value):
    """A key's value as it compares across directories, whatever type its column took: a number as a float (a
    field swept as 0, 1 in one sweep is 0.0 in another's config), anything else as its text."""
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    return float(value)


def _warn_same_directory(paths: list[Path], labels: list[str]) -> None:
    for i, j in itertools.combinations(range(len(paths)), 2):
        if os.path.samefile(paths[i], paths[j]):
            warnings.warn(f"{labels[i]} and {labels[j]} are the same directory, {str(paths[i])!r}: their difference "
                          "is 0 by construction", ResultsWarning, stacklevel=3)  # fmt: skip


def _warn_unshown_differences(results: list[Results], labels: list[str], keys: list[str]) -> None:
    differing = sorted({
        field for r in results[1:] for field in differences(results[0].config, r.config)
        if field.split(".")[0] not in SHOWN_BY_ROWS and field not in keys
    })  # fmt: skip
    if differing:
        values = [
            f"{field} ({', '.join(f'{label}: {_flat(r.config, field)}' for label, r in zip(labels, results))})"
            for field in differing
        ]
        warnings.warn(f"the directories' configs differ in {', '.join(values)}, which no column shows: every row "
                      "compares these differences too", ResultsWarning, stacklevel=3)  # fmt: skip


def _flat(config, field: str):
    """A config's value at a dotted `field`, None where its section lacks it."""
    value = to_dict(config)
    for name in field.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


def compare(sweeps: Sweeps, metric: str = "test_acc", every: bool = False) -> Comparison:
    """The long table of the module docstring: columns `keys`, then "directory" (its letter), "runs", "diverged",
    "mean" and "ci95" (the metric's over the runs that did not diverge; NaN where none did or it was not
    measured), then for the directories after the first "diff" and "diff_ci95" (the paired difference from the
    first), "paired_seeds" and "significant" (the interval excludes 0). Accuracies in percent, as in summary.md."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; compare takes {', '.join(METRICS)}")
    keys = sweeps.keys
    scale = 100.0 if "_acc" in metric else 1.0
    groups = [_runs(df, keys, metric, scale) for df in sweeps.finals]
    shared, anywhere = set.intersection(*map(set, groups)), set.union(*map(set, groups))
    chosen = anywhere if every else shared
    rows = []
    for config in sorted(chosen, key=_order):
        first = groups[0].get(config)
        for i, (label, runs) in enumerate(zip(sweeps.labels, (g.get(config) for g in groups))):
            if runs is None:
                continue
            row = {**dict(zip(keys, config)), "directory": label, "runs": len(runs.seeds) + runs.diverged,
                   "diverged": runs.diverged}  # fmt: skip
            row["mean"], row["ci95"] = _mean_ci(runs.values)
            if i > 0 and first is not None:
                row.update(_paired(first, runs))
            rows.append(row)
    columns = [*keys, "directory", "runs", "diverged", "mean", "ci95", "diff", "diff_ci95", "paired_seeds",
               "significant"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns).astype({"paired_seeds": "Int64", "significant": "boolean"})
    return Comparison(sweeps, metric, "percent" if scale == 100 else "", table, len(anywhere - chosen))


@dataclass(frozen=True)
class _Runs:
    """One configuration's runs in one directory: the seeds and metric values of those that did not diverge."""

    seeds: np.ndarray
    values: np.ndarray
    diverged: int


def _runs(df: pd.DataFrame, keys: list[str], metric: str, scale: float) -> dict[tuple, _Runs]:
    seeds, values, diverged = df.seed.to_numpy(), df[metric].to_numpy(float) * scale, df.diverged.to_numpy() != 0
    return {
        config: _Runs(seeds[rows][~diverged[rows]], values[rows][~diverged[rows]], int(diverged[rows].sum()))
        for config, rows in df.groupby(keys, sort=False).indices.items()
    }


def _order(config: tuple) -> tuple:
    """summary.md's order: text ascending, numbers descending."""
    return tuple((0, v, 0.0) if isinstance(v, str) else (1, "", -v) for v in config)


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """`mean_ci` as summary.md takes it: NaN where no value was measured."""
    if np.isnan(values).all():
        return float("nan"), float("nan")
    return mean_ci(values)


def _paired(first: _Runs, other: _Runs) -> dict:
    _, a, b = np.intersect1d(first.seeds, other.seeds, return_indices=True)
    differences = other.values[b] - first.values[a]
    differences = differences[~np.isnan(differences)]
    diff, ci = _mean_ci(differences)
    return {"diff": diff, "diff_ci95": ci, "paired_seeds": len(differences), "significant": bool(abs(diff) > ci)}


def compare_text(comparison: Comparison) -> str:
    """The table for a terminal: a key that is the same in every row said once above it, numbers as summary.md
    writes them, at most `WIDTH` columns (wider tables wrap into blocks)."""
    sweeps, table, metric = comparison.sweeps, comparison.table, comparison.metric
    unit = f", in {comparison.unit}" if comparison.unit else ""
    same = [k for k in sweeps.keys if table[k].nunique() <= 1 and len(table)]
    first = sweeps.labels[0]
    lines = [
        f"{metric} after the last epoch{unit}: mean ± 95% CI over the runs that did not diverge (as summary.md),",
        f"the diverged counted; `- {first}`: the mean paired difference from {first} over the seeds both ran "
        "without diverging,",
        "with its 95% CI; `*` where it excludes 0.",
        *(f"{label}  {path}" for label, path in zip(sweeps.labels, sweeps.paths)),
    ]
    if same:
        lines.append("in every row: " + ", ".join(f"{k}={_text(table[k].iloc[0])}" for k in same))
    if comparison.left_out == 1:
        lines.append("1 configuration that only some directories ran is left out (--all shows it)")
    elif comparison.left_out:
        lines.append(f"{comparison.left_out} configurations that only some directories ran are left out "
                     "(--all shows them)")  # fmt: skip
    if table.empty:
        return "\n".join([*lines, "no configuration to compare"])
    varying = [k for k in sweeps.keys if k not in same]
    # A configuration's rows after its first: keys left blank. Where every row is of one configuration, no key varies.
    repeated = table.duplicated(varying).to_numpy() if varying else np.zeros(len(table), bool)
    shown = pd.DataFrame(
        {k: ["" if r else _text(v) for r, v in zip(repeated, table[k])] for k in varying}, index=table.index
    )
    shown["dir"] = table.directory
    percent = comparison.unit == "percent"
    shown[metric] = [_pm(m, c, percent) for m, c in zip(table["mean"], table.ci95)]
    shown["diverged"] = [f"{d}/{n}" for d, n in zip(table.diverged, table.runs)]
    shown[f"- {first}"] = [
        "" if pd.isna(seeds) else _pm(d, c, percent) + (" *" if significant else "")
        for d, c, seeds, significant in zip(table["diff"], table.diff_ci95, table.paired_seeds, table.significant)
    ]
    shown["paired"] = ["" if pd.isna(n) else f"{n} seed{'' if n == 1 else 's'}" for n in table.paired_seeds]
    return "\n".join([*lines, "", shown.to_string(index=False, line_width=WIDTH, justify="left")])


def _text(value) -> str:
    """A key as summary.md writes it."""
    return value if isinstance(value, str) else f"{value:g}"


def _pm(mean: float, ci: float, percent: bool) -> str:
    """A mean and its interval: a percentage as summary.md writes it, anything else (a loss) to 4 digits."""
    if np.isnan(mean):
        return "-"
    digits = ".1f" if percent else ".4g"
    return f"{mean:{digits}}" if np.isnan(ci) else f"{mean:{digits}} ± {ci:{digits}}"


def write_csv(comparison: Comparison, path: Path) -> Path:
    """The long table, each row naming its directory's path and the metric, into `path`."""
    table = comparison.table.copy()
    for key in comparison.sweeps.keys:  # a number as it reads back, a whole one without its ".0"
        table[key] = [v if isinstance(v, str) or not v.is_integer() else int(v) for v in table[key]]
    table.insert(len(comparison.sweeps.keys) + 1, "path", table.directory.map(
        dict(zip(comparison.sweeps.labels, map(str, comparison.sweeps.paths)))))  # fmt: skip
    table.insert(len(comparison.sweeps.keys) + 2, "metric", comparison.metric)
    table.insert(len(comparison.sweeps.keys) + 3, "unit", comparison.unit)
    _write(path, lambda: atomic_write(Path(path), table.to_csv(index=False)))
    return Path(path)


def _write(path: Path, write) -> None:
    try:
        write()
    except OSError as e:
        raise refused_write(f"cannot write {str(path)!r}", e) from None


def check_figure_name(path: Path) -> None:
    """Refuse a figure file whose name ends in none of the formats it can be drawn in (`FORMATS`)."""
    if Path(path).suffix[1:] not in FORMATS:
        raise UserError(f"--plot {str(path)!r}: the file name must end in .{', .'.join(FORMATS)}")


def plot(sweeps: Sweeps, metric: str, path: Path) -> Path:
    """The metric against norm_batch (or init_scale when no sweep varies the batch), one panel per model and
    protocol, one line style per directory, one colour per norm; means over the runs that did not diverge."""
    check_figure_name(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [df[df.diverged == 0] for df in sweeps.finals]
    every = pd.concat(tables)
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
        for i, (label, df) in enumerate(zip(sweeps.labels, tables)):
            here = df[(df.model == model) & (df.protocol == protocol)]
            for norm, runs in here.groupby("norm"):
                curve = runs.groupby(x)[metric].mean()
                ax.plot(curve.index, curve.values, styles[i % len(styles)], color=f"C{norms.index(norm)}",
                        label=f"{norm} ({label}: {sweeps.paths[i].name})", markersize=4)  # fmt: skip
        ax.set_xscale("log", base=2 if x == "norm_batch" else 10)
        ax.set_title(f"{model}, {protocol} protocol", fontsize=10)
        ax.set_xlabel("examples per batch statistic" if x == "norm_batch" else "init std")
        ax.set_ylabel(f"final {metric}, mean over seeds")
        ax.grid(alpha=0.3)
    legend = {}  # one entry per line, whichever panels it appears in
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize=7)
    _write(path, lambda: fig.savefig(path, dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)
