"""Final-epoch accuracy per norm and init scale, mean and range over seeds, from a results directory alone.

python experiments/final_accuracy.py results/init_scale [--metric test_acc]

Diverged runs follow summary.md's policy: left out of the mean and the range, and counted in each cell.
"""

import argparse

import numpy as np

from normbench.results.store import read_metrics


def final_accuracy(columns, metric="train_acc"):
    """{(norm, init_scale): (per-seed values of `metric` at the last epoch of the runs that did not diverge,
    how many runs diverged)}."""
    last = columns["epoch"] == columns["epoch"].max()
    table = {}
    for norm, scale, value, diverged in zip(
        columns["norm"][last], columns["init_scale"][last], columns[metric][last], columns["diverged"][last]
    ):
        values, dropped = table.setdefault((str(norm), float(scale)), ([], [0]))
        if diverged:
            dropped[0] += 1
        else:
            values.append(float(value))
    return {key: (np.asarray(values), dropped[0]) for key, (values, dropped) in table.items()}


def cell(values: np.ndarray, diverged: int) -> str:
    text = f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]" if len(values) else "-"
    return text + (f" ({diverged} div.)" if diverged else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--metric", default="train_acc", choices=["train_acc", "test_acc", "train_loss", "test_loss"])
    args = parser.parse_args()
    table = final_accuracy(read_metrics(args.results_dir), args.metric)
    norms = sorted({norm for norm, _ in table})
    scales = sorted({scale for _, scale in table}, reverse=True)
    print(f"final-epoch {args.metric}: mean over the seeds that did not diverge [min, max] (diverged runs)")
    print(f"{'init_scale':>10} " + " ".join(f"{norm:>30}" for norm in norms))
    for scale in scales:
        print(f"{scale:>10.2g} " + " ".join(f"{cell(*table[(n, scale)]) if (n, scale) in table else '-':>30}"
                                            for n in norms))  # fmt: skip


if __name__ == "__main__":
    main()
