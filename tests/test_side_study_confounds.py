"""The side studies' confounds, measured: the landscape probes at matched training loss against a hand-matched
tiny table, and the batch-statistic fluctuation over the layer's scale against results/transformer_norms'
diagnostics.csv read and divided by hand."""

import csv
import warnings
from pathlib import Path

import numpy as np
from conftest import tiny_config
from scipy import stats

from normbench.core.axes import key_columns
from normbench.reports.landscape_figure import OVER_SEEDS, OVER_STEPS, PANELS, landscape_figure
from normbench.reports.layer_figures import fluctuation_figure
from normbench.reports.summary import (
    input_shape_of,
    matched_loss_section,
    relative_fluctuation_section,
    summary_markdown,
)
from normbench.results.claims import p_text, reported, tune
from normbench.results.diagnostics import read_diagnostics
from normbench.results.matched_loss import PROBES, matched_contrasts
from normbench.results.reader import read_results

COMMITTED = Path(__file__).resolve().parent.parent / "results" / "transformer_norms"

# Two seeds, one learning rate, BatchNorm and the plain network over 3 epochs: (seed, norm) -> (train_loss by epoch,
# the probe by epoch), each probe column alike.
RUNS = {
    (0, "batch"): ([1.0, 0.5, 0.1], [2.0, 4.0, 8.0]),
    (0, "none"): ([1.1, 0.9, 0.52], [10.0, 20.0, 40.0]),
    (1, "batch"): ([0.8, 0.4, 0.2], [3.0, 1.0, 0.5]),
    (1, "none"): ([2.0, 0.85, 0.45], [9.0, 6.0, 5.0]),
}
# Matched by hand: (BN's probe, the paired plain-net probe, the plain net's epoch - BN's) per seed. Seed 0: BN's
# loss 1.0 is closest to the plain net's 1.1 (log gap 0.095, against 0.105 to 0.9), its 0.5 to 0.52, and its 0.1
# to nothing within a factor 1.25 (0.52 is 5.2x). Seed 1: 0.8 pairs with 0.85, 0.4 with 0.45 (1.125x), 0.2 with
# nothing (0.45 is 2.25x).
HAND_PAIRS = {
    0: [(2.0, 10.0, 0), (4.0, 40.0, 1)],
    1: [(3.0, 6.0, 1), (1.0, 5.0, 1)],
}


def matched_table(diverged_seed=None) -> dict:
    rows = [(seed, norm, epoch) for (seed, norm) in RUNS for epoch in (1, 2, 3)]
    table = {
        "norm": np.array([norm for _, norm, _ in rows]),
        "seed": np.array([seed for seed, _, _ in rows]),
        "learning_rate": np.full(len(rows), 0.1),
        "epoch": np.array([epoch for _, _, epoch in rows]),
        "train_loss": np.array([RUNS[seed, norm][0][epoch - 1] for seed, norm, epoch in rows]),
        "diverged": np.array([int(seed == diverged_seed) for seed, _, _ in rows]),
    }
    for metric in PROBES:
        table[metric] = np.array([RUNS[seed, norm][1][epoch - 1] for seed, norm, epoch in rows])
    return table


def test_the_matched_loss_contrast_is_the_hand_matched_pairs_mean_log_ratio():
    (contrast, *_) = [c for c in matched_contrasts(matched_table()) if c.metric == "landscape_grad_change_max"]
    per_seed = [np.mean([np.log(bn / plain) for bn, plain, _ in HAND_PAIRS[seed]]) for seed in (0, 1)]
    mean, half = np.mean(per_seed), stats.t.ppf(0.975, 1) * np.std(per_seed, ddof=1) / np.sqrt(2)
    assert contrast.norm == "batch" and contrast.setting == ()
    assert contrast.pairs == (2, 2) and contrast.dropped == 0
    np.testing.assert_allclose([contrast.log_ratio, contrast.half_width], [mean, half], rtol=1e-12)
    np.testing.assert_allclose(contrast.ratio(), np.exp([mean, mean - half, mean + half]), rtol=1e-12)
    assert contrast.lag == 1  # the median of 0, 1, 1, 1
    p = stats.ttest_1samp(per_seed, 0.0).pvalue
    np.testing.assert_allclose(contrast.p, p, rtol=1e-9)
    # The table's 3 rows (one per probe, equal here) share one p, which Holm's procedure multiplies by 3.
    row = [line for line in matched_loss_section(matched_table()) if "`landscape_grad_change_max`" in line]
    assert f" | {p_text(min(1.0, 3 * p))} | 2 | +1 |" in row[0]


def test_a_diverged_seed_is_left_out_and_the_section_states_the_ratio():
    table = matched_table(diverged_seed=1)
    (contrast, *_) = [c for c in matched_contrasts(table) if c.metric == "landscape_beta"]
    assert contrast.pairs == (2,) and contrast.dropped == 1
    np.testing.assert_allclose(contrast.log_ratio, np.mean([np.log(2 / 10), np.log(4 / 40)]))
    lines = matched_loss_section(table)
    assert lines[0] == "## Landscape probes at matched training loss"
    ratio = np.exp(np.mean([np.log(0.2), np.log(0.1)]))  # 0.14: one seed, no interval
    assert f"| BatchNorm | `landscape_beta` | {ratio:.2f} | -1.96 | - | 2, 1 seed(s) left out | +0.5 |" in lines


def test_the_landscape_figure_draws_the_probes_against_the_geometric_mean_training_loss():
    table = matched_table()
    table["landscape_loss_min"], table["landscape_grad_change_min"] = table["train_loss"], table["train_loss"]
    fig = landscape_figure(table, tiny_config())
    beta_against_loss = fig.axes[len(PANELS) + 2]  # the second row, against the training loss; the β panel
    bn, plain = beta_against_loss.get_lines()
    for line, norm in ((bn, "batch"), (plain, "none")):
        losses = np.array([RUNS[seed, norm][0] for seed in (0, 1)])  # (seed, epoch)
        np.testing.assert_allclose(line.get_xdata(), np.sqrt(losses[0] * losses[1]), rtol=1e-12)
        np.testing.assert_allclose(line.get_ydata(), np.mean([RUNS[seed, norm][1] for seed in (0, 1)], axis=0))
    assert beta_against_loss.xaxis_inverted() and beta_against_loss.get_xscale() == "log"
    # The bands mean two things (a range over step sizes, a range over seeds): each panel says which.
    assert [ax.get_title().split("\n")[-1] for ax in fig.axes[: len(PANELS)]] == [band for *_, band in PANELS]
    assert {band for *_, band in PANELS} == {OVER_STEPS, OVER_SEEDS}


def test_without_a_plain_network_or_probes_no_matched_section():
    table = matched_table()
    unprobed = {k: v for k, v in table.items() if k not in PROBES}
    table["norm"] = np.where(table["norm"] == "none", "layer", table["norm"])
    for columns in (table, unprobed):
        assert matched_contrasts(columns) == [] and matched_loss_section(columns) == []


def committed_rows(**where) -> list[dict]:
    with open(COMMITTED / "diagnostics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if all(row[k] == v for k, v in where.items())]


BN_PRE_WARM = {"norm": "batch", "model.norm_placement": "pre", "train.warmup_fraction": "0.2", "learning_rate": "0.02"}


def bn_pre_warm_layers() -> dict:
    columns = read_diagnostics(COMMITTED / "diagnostics.csv")
    keep = (
        (columns["norm"] == "batch")
        & (columns["model.norm_placement"] == "pre")
        & np.isclose(columns["train.warmup_fraction"], 0.2)
        & np.isclose(columns["learning_rate"], 0.02)
    )
    return {k: v[keep] for k, v in columns.items()}


def test_the_relative_fluctuation_column_is_diagnostics_csv_divided_by_hand():
    table = relative_fluctuation_section(bn_pre_warm_layers(), tiny_config())
    header = "| configuration | layer | std, epochs 2-6 | μ / std, epochs 2-6 | σ² / std², epochs 2-6 |"
    assert header in table
    for layer in ("1", "5"):
        rows = [r for r in committed_rows(**BN_PRE_WARM, layer=layer) if r["epoch"] != "0"]
        assert len(rows) == 5 * 3  # seeds x epochs 2, 4, 6
        expected = []
        for field, power in (("pre_std", 0), ("mean_fluctuation", 1), ("var_fluctuation", 2)):
            per_seed = [
                np.mean([float(r[field]) / float(r["pre_std"]) ** power for r in rows if r["seed"] == seed])
                for seed in "01234"
            ]
            half = stats.t.ppf(0.975, 4) * np.std(per_seed, ddof=1) / np.sqrt(5)
            expected.append(f"{np.mean(per_seed):.3g} ± {half:.2g}")
        assert f"| BatchNorm | {layer} | {' | '.join(expected)} |" in table


def test_the_figure_draws_the_relative_fluctuation_after_init_only():
    fig = fluctuation_figure(bn_pre_warm_layers(), tiny_config())
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["epoch 2", "epoch 4", "epoch 6"]  # epoch 0's distance is to the initial statistics
    variance_over_scale = fig.axes[3 * 3 + 2]  # the last row (σ² / std²), the last column (epoch 6)
    (line,) = variance_over_scale.get_lines()
    rows = committed_rows(**BN_PRE_WARM, epoch="6")
    expected = [
        np.mean([float(r["var_fluctuation"]) / float(r["pre_std"]) ** 2 for r in rows if r["layer"] == str(layer)])
        for layer in range(1, 6)
    ]
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)


def test_a_study_with_one_recorded_epoch_prints_its_fluctuation_columns_once_and_names_only_its_norms():
    """results/images_per_statistic records epoch 4 alone after init and runs no PowerNorm."""
    from normbench.reports.summary import fluctuation_section
    from normbench.results.store import read_config

    committed = Path(__file__).resolve().parent.parent / "results" / "images_per_statistic"
    config = read_config(committed)
    # The rows summary.md reads: at the tuned rates, less any diverged run.
    layers = reported(read_diagnostics(committed / "diagnostics.csv"), *tune(read_results(committed).columns,
                                                                              config.report.tune))  # fmt: skip
    text = "\n".join(fluctuation_section(layers, config) + relative_fluctuation_section(layers, config))
    assert "| configuration | layer | μ, epoch 4 | σ², epoch 4 |" in text and "epochs 4-4" not in text
    assert "PowerNorm" not in text


def test_layers_without_a_scale_have_no_relative_fluctuation_and_draw_no_warning():
    """results/images_per_statistic's MLP with BatchNorm at g = 1: a statistic of one value makes every value the
    next layer sees beta, so layers 2 and 3 have pre_std 0. Their ratios were a division by zero, which summary.md
    printed as '-' after numpy's RuntimeWarning; they have no scale to compare with."""
    committed = Path(__file__).resolve().parent.parent / "results" / "images_per_statistic"
    results = read_results(committed)
    layers = read_diagnostics(committed / "diagnostics.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        text = summary_markdown(results.columns, results.config, input_shape_of(committed, results.config), layers)
    for layer in (2, 3):
        assert f"| model mlp, BatchNorm, ghost size 1 | {layer} | 0 ± 0 | - | - |" in text
    assert text == (committed / "summary.md").read_text()


def test_a_diverged_run_is_left_out_of_the_fluctuation_tables_as_of_every_mean():
    """The fluctuation tables read diagnostics.csv, which does not say which runs diverged: a chosen configuration
    with a diverged seed printed 'inf' there, though summary.md says diverged runs are left out of every mean."""
    committed = Path(__file__).resolve().parent.parent / "results" / "images_per_statistic"
    results = read_results(committed)
    config, shape = results.config, input_shape_of(committed, results.config)
    layers = read_diagnostics(committed / "diagnostics.csv")
    tuned, choices = tune(results.columns, config.report.tune)
    chosen = reported(layers, tuned, choices)
    keys = key_columns(layers)
    chose = lambda picks: [(c.group, c.chosen) for c in picks]  # noqa: E731
    # A run with batch statistics at the chosen values whose divergence leaves every choice as it was.
    for run in dict.fromkeys(zip(*(chosen[k][~np.isnan(chosen["var_fluctuation"])] for k in keys))):
        run = dict(zip(keys, run))
        columns = dict(results.columns)
        diverged = np.all([columns[k] == v for k, v in run.items()], axis=0)
        columns["diverged"] = np.where(diverged, 1, columns["diverged"])
        if chose(tune(columns, config.report.tune)[1]) == chose(choices):
            break
    else:
        raise AssertionError("every run's divergence changed a choice")
    in_run = np.all([layers[k] == v for k, v in run.items()], axis=0)
    poisoned = {**layers, **{f: np.where(in_run, np.inf, layers[f]) for f in ("mean_fluctuation", "var_fluctuation")}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        text = summary_markdown(columns, config, shape, poisoned)
    assert "inf" not in text
    assert text == summary_markdown(columns, config, shape, {k: v[~in_run] for k, v in layers.items()})
