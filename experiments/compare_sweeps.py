"""Compare two sweeps from their results directories alone: a final-epoch metric side by side, and a figure.

    python experiments/compare_sweeps.py A_DIR B_DIR [--metric test_acc] [--plot compare.png]

Rows: every (model, norm, protocol, norm_batch, init_scale, learning_rate, and any swept config field) that either
sweep ran; columns: the
metric's mean over seeds in A, in B, and B - A where both ran it, to 6 decimals (metrics.csv holds 7 significant
digits; finer differences are the float noise of averaging). `norm_batch` is the number of examples a batch
statistic sees (the SGD batch, or the ghost group). With --plot, the metric against norm_batch (or init_scale
when the batch does not vary), one panel per model and protocol: A solid, B dashed.

Each results table is read with pandas in one line, `pd.read_csv(results_dir / "metrics.csv")`; its columns
are described in docs/results.md.
"""

import argparse
from pathlib import Path

import pandas as pd

from normbench.config import get_field
from normbench.core.axes import swept_columns
from normbench.results.store import read_config

KEYS = ["model", "norm", "protocol", "norm_batch", "init_scale", "learning_rate"]


def final_epoch(results_dir) -> pd.DataFrame:
    df = pd.read_csv(Path(results_dir) / "metrics.csv")
    df = df[df.epoch == df.epoch.max()].copy()
    df["norm_batch"] = df.ghost_size.where(df.protocol == "ghost", df.batch_size)
    return df


def compare(a_dir, b_dir, metric: str = "test_acc") -> pd.DataFrame:
    """The metric's mean over seeds per configuration, in A and in B, and B - A."""
    dirs = {"A": a_dir, "B": b_dir}
    tables = {name: final_epoch(d) for name, d in dirs.items()}
    swept = [column for df in tables.values() for column in swept_columns(df.columns)]
    keys = KEYS + list(dict.fromkeys(swept))
    for name, df in tables.items():  # a field one sweep did not vary is its config's value in every run
        for key in keys:
            if key not in df:
                df[key] = get_field(read_config(dirs[name]), key)
    means = {name: df.groupby(keys)[metric].mean() for name, df in tables.items()}
    table = pd.concat(means, axis=1).sort_index()
    table["B - A"] = (table["B"] - table["A"]).round(6)
    return table


def plot(a_dir, b_dir, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = final_epoch(a_dir), final_epoch(b_dir)
    x = "norm_batch" if pd.concat([a, b]).norm_batch.nunique() > 1 else "init_scale"
    panels = sorted(set(zip(a.model, a.protocol)) | set(zip(b.model, b.protocol)))
    norms = list(dict.fromkeys([*a.norm, *b.norm]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (model, protocol) in zip(axes.flat, panels):
        for df, style, label in ((a, "o-", Path(a_dir).name), (b, "s--", Path(b_dir).name)):
            here = df[(df.model == model) & (df.protocol == protocol)]
            for norm, rows in here.groupby("norm"):
                curve = rows.groupby(x)[metric].mean()
                color = f"C{norms.index(norm)}"
                ax.plot(curve.index, curve.values, style, color=color, label=f"{norm} ({label})", markersize=4)
        ax.set_xscale("log", base=2 if x == "norm_batch" else 10)
        ax.set_title(f"{model}, {protocol} protocol", fontsize=10)
        ax.set_xlabel(x)
        ax.set_ylabel(f"final {metric}, mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a_dir")
    parser.add_argument("b_dir")
    parser.add_argument("--metric", default="test_acc", choices=["train_acc", "test_acc", "train_loss", "test_loss"])
    parser.add_argument("--plot", type=Path, help="also draw the comparison into this PNG")
    args = parser.parse_args()
    shown = ("display.max_rows", None, "display.max_columns", None, "display.width", 0)
    with pd.option_context(*shown, "display.float_format", "{:.4g}".format):
        print(compare(args.a_dir, args.b_dir, args.metric))
    if args.plot:
        plot(args.a_dir, args.b_dir, args.metric, args.plot)
        print(args.plot)


if __name__ == "__main__":
    main()
