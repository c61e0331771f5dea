"""Summaries and figures read the table as data: diverged runs are counted and shown apart, never averaged in,
and the row order of metrics.csv does not matter."""

import numpy as np

from normbench.config import Config
from normbench.reports.plots import init_scale_figure
from normbench.reports.summary import final_table
from normbench.results.stats import mean_ci, per_run


def table(rng=None):
    """Two seeds x two epochs of one cell; seed 1 diverges in epoch 2 (its accuracy then falls to 0.1)."""
    rows = [
        # seed, epoch, train_acc, test_acc, diverged
        (0, 1, 0.5, 0.40, 0),
        (0, 2, 0.8, 0.70, 0),
        (1, 1, 0.6, 0.50, 0),
        (1, 2, 0.1, 0.10, 1),
    ]
    order = np.arange(len(rows)) if rng is None else rng.permutation(len(rows))
    seed, epoch, train_acc, test_acc, diverged = (np.array(v) for v in zip(*[rows[i] for i in order]))
    n = len(rows)
    return {
        "model": np.full(n, "mlp"), "norm": np.full(n, "batch"), "protocol": np.full(n, "sgd"),
        "batch_size": np.full(n, 8), "ghost_size": np.full(n, 8), "init_scale": np.full(n, 1.0),
        "learning_rate": np.full(n, 0.1), "seed": seed, "epoch": epoch, "train_loss": np.ones(n),
        "train_acc": train_acc, "test_acc": test_acc, "test_loss": np.ones(n), "test_acc_batch_stats": np.ones(n),
        "test_acc_precise": np.ones(n), "diverged": diverged,
    }  # fmt: skip


def test_mean_ci_is_the_student_t_interval():
    # 1, 2, 3: mean 2, sample std 1; t(0.975, 2 degrees of freedom) = 4.3027 from a printed t table
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    np.testing.assert_allclose(half, 4.302653 / np.sqrt(3), rtol=1e-6)
    np.testing.assert_allclose(mean_ci([0.0, 1.0], level=0.9)[1], 6.313752 * 0.5, rtol=1e-6)
    assert np.isnan(mean_ci([5.0])[1])


def test_per_run_pivots_any_row_order():
    expected = np.array([[0.5, 0.8], [0.6, 0.1]])
    for seed in range(5):
        columns = table(np.random.default_rng(seed))
        np.testing.assert_array_equal(per_run(columns, np.ones(4, bool), "train_acc"), expected)


def test_summary_leaves_diverged_runs_out_of_the_mean_and_counts_them():
    columns = table()
    last = columns["epoch"] == 2
    row = final_table({**{k: v[last] for k, v in columns.items()}, "norm_batch": columns["batch_size"][last]})[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6] == "80.0" and cells[7] == "70.0"  # seed 0 alone, not (80 + 10) / 2
    assert cells[-1] == "1/2"


def test_init_scale_figure_draws_the_diverged_run_apart():
    fig = init_scale_figure(table(np.random.default_rng(1)), Config(name="t"))
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert "1 diverged" in ax.get_title()
    mean = [line for line in ax.get_lines() if line.get_label() == "batch"]
    np.testing.assert_allclose(mean[0].get_ydata(), [0.5, 0.8])  # the surviving seed only
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(cross.get_xdata()) == [2] and list(cross.get_ydata()) == [0.1]
