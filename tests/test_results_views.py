"""Summaries and figures read the table as data: diverged runs are counted and shown apart, never averaged in,
and the row order of metrics.csv does not matter."""

from pathlib import Path

import numpy as np
import pytest

from normbench.config import Config
from normbench.reports.plots import (
    BN_EVAL_STYLES,
    HOLLOW,
    SHADED,
    bn_eval_modes_figure,
    error_vs_batch_figure,
    evaluation_points,
    images_per_statistic_figure,
    init_scale_figure,
    series_colors,
)
from normbench.reports.summary import final_table
from normbench.results.stats import mean_ci, per_run
from normbench.results.store import read_config, read_metrics


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
        "test_acc_precise": np.ones(n), "train_acc_batch_stats": np.ones(n), "test_acc_example_weighted": np.ones(n),
        "diverged": diverged,
    }  # fmt: skip


def title(fig) -> str:
    """A figure's title as read: the lines it is broken into, joined by spaces."""
    return " ".join(fig._suptitle.get_text().split())


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
    assert cells[6] == "80.0" and cells[8] == "70.0"  # seed 0 alone, not (80 + 10) / 2
    assert cells[-1] == "1/2"


def test_init_scale_figure_draws_the_diverged_run_apart():
    fig = init_scale_figure(table(np.random.default_rng(1)), Config(name="t"))
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_title().endswith("diverged (x): BatchNorm 1")  # which norm, not only how many
    mean = [line for line in ax.get_lines() if line.get_label() == "BatchNorm"]
    np.testing.assert_allclose(mean[0].get_ydata(), [0.5, 0.8])  # the surviving seed only
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(cross.get_xdata()) == [2] and list(cross.get_ydata()) == [0.1]


SMALL_BATCH = Path(__file__).resolve().parent.parent / "results" / "small_batch"


def band_heights(ax) -> np.ndarray:
    return np.concatenate([path.vertices[:, 1] for band in ax.collections for path in band.get_paths()])


@pytest.fixture(scope="module")
def small_batch():
    import matplotlib

    matplotlib.use("Agg")
    return read_metrics(SMALL_BATCH), read_config(SMALL_BATCH)


def two_models(columns):
    """The committed CNN runs, and the same runs again named `mlp`: a sweep of two models."""
    named = np.full(len(columns["model"]), "mlp")
    return {k: np.concatenate([named if k == "model" else v, v]) for k, v in columns.items()}


def two_protocols(columns):
    """The committed `sgd` runs, and the same runs again under `ghost`: a sweep of two protocols."""
    named = np.full(len(columns["protocol"]), "ghost")
    return {k: np.concatenate([v, named if k == "protocol" else v]) for k, v in columns.items()}


def test_the_error_figure_wraps_its_panels_shares_y_per_model_and_names_norms_for_readers(small_batch):
    columns, config = small_batch
    fig = error_vs_batch_figure(two_models(two_protocols(columns)), config)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 4 and fig.get_size_inches()[0] < 10  # two models x two protocols, not one strip
    mlp_sgd, mlp_ghost, cnn_sgd, _ = panels
    assert mlp_sgd.get_shared_y_axes().joined(mlp_sgd, mlp_ghost)  # one model under each protocol: one scale
    assert not mlp_sgd.get_shared_y_axes().joined(mlp_sgd, cnn_sgd)
    assert all(ax.get_legend() is None for ax in panels) and len(fig.legends) == 1  # off the data
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["BatchNorm", "LayerNorm", "GroupNorm"]
    assert panels[0].get_xlabel() == "examples per statistic (batch, or ghost group)"
    assert all(0 <= h <= 1 for ax in panels for h in band_heights(ax))  # errors' confidence bands stay in [0, 1]
    assert "over 5 seeds" in title(fig)


def test_a_one_panel_figures_title_is_broken_into_lines_within_the_figure(small_batch):
    columns, config = small_batch
    fig = error_vs_batch_figure(columns, config)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
    text = fig._suptitle
    assert "\n" in text.get_text()
    assert text.get_window_extent(fig.canvas.get_renderer()).width <= fig.get_figwidth() * fig.dpi


def test_the_evaluation_modes_title_names_the_norm_it_draws(small_batch):
    columns, config = small_batch
    assert "evaluation modes of BatchNorm " in title(bn_eval_modes_figure(columns, config))
    renorm = {**columns, "norm": np.where(columns["norm"] == "batch", "batch_renorm", columns["norm"])}
    renorm_title = title(bn_eval_modes_figure(renorm, config))
    assert "evaluation modes of Batch Renorm " in renorm_title and "BatchNorm" not in renorm_title


def test_the_init_scale_figure_names_the_init_std_and_says_one_seed_is_one_seed():
    columns = table()
    one_seed = {k: v[columns["seed"] == 0] for k, v in columns.items()}
    fig = init_scale_figure(one_seed, Config(name="t"))
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_title() == "init std σ = 1"
    assert title(fig).endswith(": train accuracy, seed 0 alone (no mean, no min..max band)")
    assert ax.get_legend() is None
    two = title(init_scale_figure(columns, Config(name="t")))
    assert two.endswith(": train accuracy, mean and min..max band over 2 seeds")


def legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_the_evaluation_modes_are_drawn_in_styles_no_two_share(small_batch):
    styles = [(s["marker"], s["linestyle"]) for s in BN_EVAL_STYLES.values()]
    assert len(set(styles)) == len(styles)  # a mode drawn over another of its style hides it (EMA under PreciseBN)
    columns, config = small_batch
    (ax,) = [a for a in bn_eval_modes_figure(columns, config).axes if a.get_visible()]
    ema, precise = ([line for line in ax.get_lines() if line.get_label() == label][0]
                    for label in ("running averages (EMA)", "PreciseBN statistics"))  # fmt: skip
    assert (ema.get_marker(), ema.get_linestyle()) != (precise.get_marker(), precise.get_linestyle())


def test_degenerate_statistics_are_marked_and_the_legend_says_how(small_batch):
    """The same runs named an MLP's: at batch 2 its statistics hold 2 values, degenerate, and both figures shade
    that size and say so under the panels, the error figure's point there drawn hollow."""
    columns, config = small_batch
    mlp = {**columns, "model": np.full(len(columns["model"]), "mlp")}
    errors = images_per_statistic_figure(mlp, config)
    assert legend_labels(errors)[-2:] == [SHADED, HOLLOW]  # after the norms, what the marks mean
    (ax,) = [a for a in errors.axes if a.get_visible()]
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in hollow] == [[2]]
    assert SHADED in legend_labels(bn_eval_modes_figure(mlp, config))
    assert SHADED not in legend_labels(bn_eval_modes_figure(columns, config))  # the CNN's hold 2 x 196 values


@pytest.mark.parametrize("n", [3, 15, 20, 24])
def test_a_figure_of_many_series_gives_each_its_own_colour(n):
    import matplotlib.colors

    assert len({matplotlib.colors.to_hex(c) for c in series_colors(n)}) == n  # tab10 gave 15 norms 10 colours


def test_curves_over_training_are_drawn_against_what_an_epoch_is():
    """The textbook's 20 epochs of 10 steps, the first of 1, are its evaluations after SGD steps 1, 11, ..., 191."""
    epochs = np.arange(1, 21)
    config = read_config(Path(__file__).resolve().parent.parent / "results" / "init_scale")
    steps, label = evaluation_points(epochs, config)
    assert label == "SGD steps" and list(steps[:3]) == [1, 11, 21] and steps[-1] == 191
    assert evaluation_points(epochs, Config(name="t"))[1] == "epochs"  # an epoch a pass over the data
