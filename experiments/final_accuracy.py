"""Final-epoch accuracy per norm and init scale, mean and range over seeds, from a results directory alone.

python experiments/final_accuracy.py results/init_scale [--metric test_acc]
"""

import argparse

import numpy as np

from normbench.results.store import read_metrics


def final_accuracy(columns, metric="train_acc"):
    """{(norm, init_scale): per-seed values of `metric` at the last epoch}."""
    last = columns["epoch"] == columns["epoch"].max()
    table = {}
    for norm, scale, value in zip(columns["norm"][last], columns["init_scale"][last], columns[metric][last]):
        table.setdefault((str(norm), float(scale)), []).append(float(value))
    return {key: np.asarray(values) for key, values in table.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--metric", default="train_acc", choices=["train_acc", "test_acc", "train_loss", "test_loss"])
    args = parser.parse_args()
    table = final_accuracy(read_metrics(args.results_dir), args.metric)
    norms = sorted({norm for norm, _ in table})
    scales = sorted({scale for _, scale in table}, reverse=True)
    print(f"final-epoch {args.metric}: mean over seeds [min, max]")
    print(f"{'init_scale':>10} " + " ".join(f"{norm:>20}" for norm in norms))
    for scale in scales:
        cells = []
        for norm in norms:
            v = table.get((norm, scale))
            cells.append(f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]" if v is not None else "-")
        print(f"{scale:>10.2g} " + " ".join(f"{c:>20}" for c in cells))
    print(f"{'mean':>10} " + " ".join(f"{np.mean([table[(n, s)].mean() for s in scales]):>20.3f}" for n in norms))


if __name__ == "__main__":
    main()
