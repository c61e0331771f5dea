"""Claims stated from the data: paired contrasts over seeds with their intervals, judged as a family by Holm's
procedure, and tuning on the validation set alone."""

import dataclasses

import numpy as np
import pytest
from conftest import tiny_config
from scipy import stats

from normbench.config import Config, ConfigError, ReportConfig
from normbench.core.axes import EPOCH, run_columns
from normbench.results.claims import (
    ClaimError,
    _ids,
    at_choices,
    check_claim,
    evaluate,
    evaluate_all,
    holm,
    parse_claim,
    reported,
    tune,
)
from normbench.results.store import metric_columns

SEEDS = np.arange(5)


def table(rows):
    """Columns from dicts of run keys and metrics, one epoch each."""
    keys = ["model", "norm", "batch_size", "learning_rate", "seed", "epoch", "train_acc", "val_acc", "test_acc",
            "test_acc_batch_stats", "test_loss"]  # fmt: skip
    columns = {k: np.array([r.get(k, 0) for r in rows]) for k in keys}
    columns["diverged"] = np.array([r.get("diverged", 0) for r in rows])
    columns["model"] = columns["model"].astype(str)
    columns["norm"] = columns["norm"].astype(str)
    return columns


def drops(bn, gn):
    """Runs of two norms at batch 128 and 2 whose per-seed accuracies are given as (at 128, at 2) arrays."""
    rows = []
    for norm, (large, small) in (("batch", bn), ("group", gn)):
        for seed in SEEDS:
            for batch, acc in ((128, large[seed]), (2, small[seed])):
                rows.append(dict(model="cnn", norm=norm, batch_size=batch, seed=seed, epoch=3, test_acc=acc))
    return table(rows)


def test_a_contrast_is_the_mean_of_per_seed_differences_with_a_student_t_interval_and_test():
    rng = np.random.default_rng(0)
    bn = (0.95 + 0.01 * rng.random(5), 0.60 + 0.05 * rng.random(5))
    gn = (0.94 + 0.01 * rng.random(5), 0.93 + 0.01 * rng.random(5))
    claim = parse_claim(
        "test_acc, model=cnn: norm=batch batch_size=128 - norm=batch batch_size=2 - norm=group batch_size=128 "
        "+ norm=group batch_size=2"
    )
    finding = evaluate(claim, drops(bn, gn))
    per_seed = (bn[0] - bn[1]) - (gn[0] - gn[1])
    half = stats.t.ppf(0.975, 4) * per_seed.std(ddof=1) / np.sqrt(5)
    assert finding.mean == pytest.approx(per_seed.mean())
    assert finding.half_width == pytest.approx(half)
    assert finding.p == pytest.approx(stats.ttest_1samp(per_seed, 0.0).pvalue, rel=1e-9)
    assert finding.adjusted_p == finding.p and finding.family == 1  # judged alone, Holm changes nothing
    assert finding.verdict() == "significant (Holm)" and "points" in finding.line()


@pytest.mark.parametrize("spread", [0.005, 0.02, 0.2])
def test_the_p_value_is_scipys_one_sample_t_test_on_the_per_seed_contrasts(spread):
    rng = np.random.default_rng(1)
    bn = (0.9 + spread * rng.standard_normal(5), 0.89 + spread * rng.standard_normal(5))
    gn = (0.9 + spread * rng.standard_normal(5), 0.9 + spread * rng.standard_normal(5))
    finding = evaluate(parse_claim("test_acc: norm=batch batch_size=2 - norm=group batch_size=2"), drops(bn, gn))
    assert finding.p == pytest.approx(stats.ttest_1samp(bn[1] - gn[1], 0.0).pvalue, rel=1e-9)


def test_a_contrast_whose_interval_holds_zero_is_not_significant():
    noise = np.array([0.02, -0.03, 0.01, -0.01, 0.015])
    finding = evaluate(parse_claim("test_acc: norm=batch batch_size=2 - norm=group batch_size=2"),
                       drops((noise, 0.9 + noise), (noise, 0.9 - noise)))  # fmt: skip
    assert finding.verdict() == "not significant (Holm)"
    assert "**not significant (Holm)**" in finding.line() and "excludes 0" not in finding.line()


def test_seeds_with_a_diverged_run_are_left_out_and_counted():
    columns = drops((np.full(5, 0.9), np.full(5, 0.5)), (np.full(5, 0.9), np.full(5, 0.9)))
    columns["diverged"][(columns["norm"] == "batch") & (columns["seed"] == 3) & (columns["batch_size"] == 2)] = 1
    finding = evaluate(parse_claim("test_acc: norm=batch batch_size=2 - norm=group batch_size=2"), columns)
    assert (finding.seeds, finding.dropped) == (4, 1)
    assert "1 seed(s) left out" in finding.line()


def test_a_term_that_selects_several_runs_per_seed_is_an_error_naming_the_columns_to_fix():
    columns = drops((np.ones(5), np.ones(5)), (np.ones(5), np.ones(5)))
    with pytest.raises(ConfigError, match="several runs per seed; fix batch_size"):
        evaluate(parse_claim("test_acc: norm=batch - norm=group"), columns)


@pytest.mark.parametrize("text", ["test_acc norm=batch - norm=group", "test_acc: norm=batch", "test_acc: batch - x"])
def test_malformed_claims_are_config_errors(text):
    with pytest.raises(ConfigError, match="claim"):
        parse_claim(text)


def test_tuning_chooses_on_validation_accuracy_never_on_test_accuracy():
    """The test set prefers another rate in every group: a tuner that peeked would choose it. Of three rates tried,
    a choice at the smallest or largest is at that edge (the optimum may lie beyond the grid) and one in the middle
    is at none."""
    rows = []
    for norm, good in (("batch", 0.2), ("group", 0.4), ("layer", 0.1)):
        for lr in (0.1, 0.2, 0.4):
            for seed in SEEDS:
                val = 0.9 if lr == good else 0.8
                rows.append(dict(norm=norm, learning_rate=lr, seed=seed, epoch=1, val_acc=val, test_acc=1.7 - val))
    tuned, choices = tune(table(rows), ("learning_rate",))
    chosen = {(dict(c.group)["norm"], dict(c.chosen)["learning_rate"]) for c in choices}
    assert chosen == {("batch", 0.2), ("group", 0.4), ("layer", 0.1)}
    assert set(zip(tuned["norm"], tuned["learning_rate"])) == chosen
    assert len(tuned["seed"]) == 3 * len(SEEDS)
    edges = {dict(c.group)["norm"]: c.edges() for c in choices}
    assert edges == {"batch": (), "group": (("learning_rate", 1),), "layer": (("learning_rate", -1),)}
    assert [c.at_edge for c in sorted(choices, key=lambda c: dict(c.group)["norm"])] == [False, True, True]


def test_tunings_groups_are_numbered_in_the_order_of_their_values_as_text():
    """`_ids` numbers each column's values and folds the columns in: the ids of rows of text sorted whole, where
    text orders numbers otherwise (10 before 2) and NaNs are one value."""
    rng = np.random.default_rng(0)
    n = 500
    columns = {
        "rate": rng.choice([0.5, 10.0, 2.0, 1e-05, np.nan], n),
        "batch": rng.choice([2, 16, 128, 4], n),
        "norm": rng.choice(["layer", "batch", "group_4", "group_32"], n),
        EPOCH: np.ones(n, int),
    }
    names = ["norm", "rate", "batch"]
    text = np.stack([columns[name].astype(str) for name in names], axis=1)
    assert np.array_equal(_ids(columns, names), np.unique(text, axis=0, return_inverse=True)[1].reshape(-1))
    assert np.array_equal(_ids(columns, []), np.zeros(n, int))


def test_a_rate_where_a_seed_diverged_counts_that_seed_as_zero():
    rows = []
    for lr, vals in ((0.1, [0.8] * 5), (0.4, [0.95, 0.95, 0.95, 0.95, float("nan")])):
        for seed, val in zip(SEEDS, vals):
            rows.append(dict(norm="batch", learning_rate=lr, seed=seed, epoch=1, val_acc=val, diverged=int(val != val)))
    _, (choice,) = tune(table(rows), ("learning_rate",))
    assert dict(choice.chosen)["learning_rate"] == 0.1  # 0.76 with the diverged seed at 0, against 0.8


def test_plot_with_a_config_revises_the_claims_without_retraining(study, tmp_path):
    """`normbench plot DIR --config FILE` takes the report section from FILE when FILE trains the same runs, and
    refuses one that trains others, changing nothing."""
    import json
    import shutil

    from conftest import TINY_STUDY

    from normbench.cli import main

    _, results = study
    out = tmp_path / "results"
    shutil.copytree(results, out)
    claimed = tmp_path / "claimed.py"
    report = 'report=ReportConfig(claims=("train_acc, init_scale=1: norm=batch - norm=none",)),'
    text = TINY_STUDY.replace("figures=", f"{report}\n        figures=")
    claimed.write_text(text.replace("SweepConfig, TrainConfig", "ReportConfig, SweepConfig, TrainConfig"))
    metrics = (out / "metrics.csv").read_bytes()
    assert main(["plot", str(out), "--config", str(claimed)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["report"]["claims"] == ["train_acc, init_scale=1: norm=batch - norm=none"]
    assert "environment" in saved, "what config.json records besides the config stays"
    assert "`train_acc, init_scale=1: norm=batch - norm=none`" in (out / "summary.md").read_text()
    assert (out / "metrics.csv").read_bytes() == metrics

    ambiguous = tmp_path / "ambiguous.py"
    ambiguous.write_text(claimed.read_text().replace(", init_scale=1", ""))
    before = (out / "config.json").read_bytes()
    assert main(["plot", str(out), "--config", str(ambiguous)]) == 0  # both init scales pair with each seed
    assert "not evaluated: a term selects several runs per seed; fix init_scale" in (out / "summary.md").read_text()

    other = tmp_path / "other.py"
    other.write_text(TINY_STUDY.replace("epochs=2", "epochs=3"))
    before = (out / "config.json").read_bytes()
    assert main(["plot", str(out), "--config", str(other)]) == 2
    assert (out / "config.json").read_bytes() == before


def test_a_claim_about_runs_the_sweep_lacks_says_so():
    columns = drops((np.ones(5), np.ones(5)), (np.ones(5), np.ones(5)))
    with pytest.raises(ConfigError, match="no run has norm=layer batch_size=2"):
        evaluate(parse_claim("test_acc: norm=batch batch_size=2 - norm=layer batch_size=2"), columns)


def test_what_the_paper_says_follows_a_hash_and_summary_states_it_before_the_finding():
    from normbench.reports.summary import _claim_line

    columns = drops((np.full(5, 0.9), np.full(5, 0.5)), (np.full(5, 0.9), np.full(5, 0.9)))
    text = "test_acc: norm=batch batch_size=2 - norm=group batch_size=2 # GN beats BN at batch 2 (Wu & He)."
    assert parse_claim(text) == parse_claim("test_acc: norm=batch batch_size=2 - norm=group batch_size=2")
    line = _claim_line(text, evaluate_all([text], columns)[0])
    assert line.startswith("The paper: GN beats BN at batch 2 (Wu & He). Here: `test_acc: norm=batch batch_size=2")
    assert "-40.00 points" in line


def test_another_table_of_the_same_runs_keeps_the_rows_at_the_tuned_values():
    rows = [dict(norm=norm, learning_rate=lr, seed=seed, epoch=1, val_acc=0.9 if lr == 0.1 else 0.8)
            for norm in ("batch", "power") for lr in (0.1, 0.4) for seed in SEEDS]  # fmt: skip
    _, choices = tune(table(rows), ("learning_rate",))
    layers = {**table(rows * 2), "layer": np.repeat([1, 2], len(rows))}
    kept = at_choices(layers, choices)
    assert set(kept["learning_rate"]) == {0.1} and len(kept["layer"]) == 2 * 2 * len(SEEDS)


def test_the_diagnostics_summary_reads_leave_out_a_diverged_run_as_its_means_do():
    rows = [dict(norm="batch", learning_rate=lr, seed=seed, epoch=1, val_acc=0.9 if lr == 0.1 else 0.8,
                 diverged=int(seed == 3)) for lr in (0.1, 0.4) for seed in SEEDS]  # fmt: skip
    columns = table(rows)
    _, choices = tune(columns, ("learning_rate",))
    layers = {**table(rows * 2), "layer": np.repeat([1, 2], len(rows))}
    kept = reported(layers, columns, choices)
    assert set(kept["learning_rate"]) == {0.1} and set(kept["seed"]) == set(SEEDS) - {3}
    assert len(kept["layer"]) == 2 * (len(SEEDS) - 1)


def test_holms_adjusted_p_values_on_hand_computed_examples():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 0.6 * 2 = 1.2 is capped at 1, and the larger p-value after it cannot fall below it.
    np.testing.assert_allclose(holm([0.7, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.2]), [0.2])


def step_down(p, alpha):
    """Holm's procedure as stated: test the sorted p-values in turn, the k-th (from 1) at alpha / (m - k + 1),
    rejecting until the first that passes."""
    rejected = set()
    for k, i in enumerate(np.argsort(p), start=1):
        if p[i] > alpha / (len(p) - k + 1):
            break
        rejected.add(i)
    return rejected


@pytest.mark.parametrize("seed", range(20))
def test_holm_rejects_exactly_what_the_step_down_procedure_rejects_and_its_p_is_the_smallest_level_that_does(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(rng.integers(1, 13)) ** 3  # many small p-values, so that some levels reject some
    adjusted = holm(p)
    for alpha in (0.001, 0.01, 0.05, 0.1, 0.5):
        assert {i for i in range(len(p)) if adjusted[i] <= alpha} == step_down(p, alpha)
    # Each adjusted p-value is the smallest level at which the procedure rejects its hypothesis (1 if none does):
    # levels change what it rejects only at (m - k + 1) * p_(k).
    levels = sorted({min(1.0, (len(p) - k) * q) for k, q in enumerate(np.sort(p))})
    for i in range(len(p)):
        smallest = next((alpha for alpha in levels if i in step_down(p, alpha * (1 + 1e-12))), 1.0)
        assert adjusted[i] == pytest.approx(smallest, rel=1e-9)


NOISE = np.array([0.02, -0.03, 0.01, -0.01, 0.015])
# Mean 0.03 and p = 0.040 over 5 seeds: its interval excludes 0, but not once tested among three claims.
SHIFT = np.array([0.02, 0.06, 0.0, 0.04, 0.03])


def family_table():
    """Per seed, a base norm's test accuracy and three others': the base plus SHIFT, plus NOISE, plus NOISE reversed."""
    base = 0.8 + 0.01 * np.arange(5)
    accuracies = {"base": base, "shifted": base + SHIFT, "noisy": base + NOISE, "reversed": base + NOISE[::-1]}
    rows = [
        dict(norm=norm, seed=seed, epoch=1, test_acc=acc[seed]) for norm, acc in accuracies.items() for seed in SEEDS
    ]
    return table(rows)


FAMILY = (
    "test_acc: norm=shifted - norm=base > 0",
    "test_acc: norm=noisy - norm=base",
    "test_acc: norm=reversed - norm=base",
)


def test_a_claim_whose_interval_excludes_zero_is_not_significant_after_holms_correction_for_its_family():
    columns = family_table()
    alone = evaluate(parse_claim(FAMILY[0]), columns)
    assert alone.interval_excludes_zero() and 0.0167 < alone.p < 0.05  # significant alone, not at 0.05 / 3
    assert alone.verdict() == "significant (Holm)" and "agrees with the reference" in alone.line()
    shifted, noisy, reversed_ = evaluate_all(FAMILY, columns)
    assert shifted.family == 3 and shifted.adjusted_p == pytest.approx(3 * alone.p)
    assert noisy.adjusted_p == reversed_.adjusted_p == pytest.approx(min(1.0, 2 * noisy.p))
    line = shifted.line()
    half = stats.t.ppf(0.975, 4) * SHIFT.std(ddof=1) / np.sqrt(5)
    unadjusted = f"95% CI [{100 * (SHIFT.mean() - half):+.2f}, {100 * (SHIFT.mean() + half):+.2f}]"
    assert unadjusted in line, "the interval printed stays the unadjusted one"
    assert f"Holm-adjusted p = {3 * alone.p:.2f}" in line
    assert "**not significant after Holm's correction for 3 claims**; unadjusted interval excludes 0" in line
    assert "the reference's sign is not shown here" in line, "the reference's sign is judged by Holm's verdict"
    assert "Holm-adjusted p = 1.00: **not significant (Holm)**" in noisy.line()


def test_summary_states_the_correction_and_every_claims_holm_verdict():
    from normbench.reports.summary import claims_section

    config = dataclasses.replace(Config(), report=ReportConfig(claims=(*FAMILY, "test_acc: norm=batch - norm=base")))
    text = "\n".join(claims_section(family_table(), config))
    assert "Holm-Bonferroni over the 3 claims of this study that these runs decide (of 4)" in text
    assert "family-wise error 5%" in text
    assert "not significant after Holm's correction for 3 claims" in text
    assert "`test_acc: norm=batch - norm=base`: not evaluated: no run has norm=batch" in text
    assert "**significant" not in text


def test_a_term_may_name_its_own_metric_and_the_contrast_is_the_difference_of_the_two_columns():
    rng = np.random.default_rng(2)
    running, own = 0.9 + 0.01 * rng.random(5), 0.7 + 0.05 * rng.random(5)
    group = 0.85 + 0.01 * rng.random(5)
    rows = [dict(norm="batch", seed=s, epoch=2, test_acc=running[s], test_acc_batch_stats=own[s]) for s in SEEDS]
    rows += [dict(norm="group", seed=s, epoch=2, test_acc=group[s], test_acc_batch_stats=0.0) for s in SEEDS]
    rows += [dict(norm="batch", seed=s, epoch=1, test_acc=0.0, test_acc_batch_stats=0.0) for s in SEEDS]
    columns = table(rows)
    claim = parse_claim("test_acc, norm=batch: metric=test_acc_batch_stats - metric=test_acc")
    assert claim.metrics == ("test_acc", "test_acc_batch_stats") and claim.terms[1].pairs == ()
    finding = evaluate(claim, columns)
    assert finding.mean == pytest.approx(np.mean(own - running)) and finding.seeds == 5
    assert finding.p == pytest.approx(stats.ttest_1samp(own - running, 0.0).pvalue, rel=1e-9)
    assert "points" in finding.line()
    # A term without one reads the head's metric.
    mixed = evaluate(parse_claim("test_acc: norm=batch metric=test_acc_batch_stats - norm=group"), columns)
    assert mixed.mean == pytest.approx(np.mean(own - group))


@pytest.mark.parametrize(
    "text, message",
    [
        ("test_acc: norm=batch metric=test_acc_wrong - norm=none", "unknown metric 'test_acc_wrong'; valid: epoch, "),
        ("test_accc: norm=batch - norm=none", "unknown metric 'test_accc'; valid: epoch, "),
        ("test_acc: metric=test_loss - metric=test_acc", "mixes accuracies (test_acc), in points, with metrics of"),
        ("test_loss: metric=train_acc norm=batch - norm=none", "all accuracies or none is"),
        ("test_acc, metric=test_loss: norm=batch - norm=none", "the claim's metric comes first"),
        ("test_acc: metric=test_loss metric=test_acc norm=batch - norm=none", "names metric= 2 times"),
    ],
)
def test_a_bad_metric_is_refused_in_one_line_before_anything_trains(text, message):
    config = tiny_config(norms=("batch", "none"))
    with pytest.raises(ClaimError) as error:
        check_claim(text, metric_columns(config), run_columns(config))
    assert message in str(error.value) and "\n" not in str(error.value)
