"""Claims stated from the data: paired contrasts over seeds with their intervals, and tuning on the validation set
alone."""

import numpy as np
import pytest
from scipy import stats

from normbench.config import ConfigError
from normbench.results.claims import at_choices, evaluate, parse_claim, tune

SEEDS = np.arange(5)


def table(rows):
    """Columns from dicts of run keys and metrics, one epoch each."""
    keys = ["model", "norm", "batch_size", "learning_rate", "seed", "epoch", "train_acc", "val_acc", "test_acc"]
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


def test_a_contrast_is_the_mean_of_per_seed_differences_with_a_student_t_interval():
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
    assert finding.verdict() == "significant" and "points" in finding.line()


def test_a_contrast_whose_interval_holds_zero_is_not_significant():
    noise = np.array([0.02, -0.03, 0.01, -0.01, 0.015])
    finding = evaluate(parse_claim("test_acc: norm=batch batch_size=2 - norm=group batch_size=2"),
                       drops((noise, 0.9 + noise), (noise, 0.9 - noise)))  # fmt: skip
    assert finding.verdict() == "not significant"
    assert "**not significant**" in finding.line()


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
    """The test set prefers the other rate in every group: a tuner that peeked would choose it."""
    rows = []
    for norm, good in (("batch", 0.1), ("group", 0.4)):
        for lr in (0.1, 0.4):
            for seed in SEEDS:
                val = 0.9 if lr == good else 0.8
                rows.append(dict(norm=norm, learning_rate=lr, seed=seed, epoch=1, val_acc=val, test_acc=1.7 - val))
    tuned, choices = tune(table(rows), ("learning_rate",))
    chosen = {(dict(c.group)["norm"], dict(c.chosen)["learning_rate"]) for c in choices}
    assert chosen == {("batch", 0.1), ("group", 0.4)}
    assert set(zip(tuned["norm"], tuned["learning_rate"])) == {("batch", 0.1), ("group", 0.4)}
    assert len(tuned["seed"]) == 2 * len(SEEDS)
    assert all(c.at_edge for c in choices)  # of two rates tried, either is an edge


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
    line = _claim_line(text, columns)
    assert line.startswith("The paper: GN beats BN at batch 2 (Wu & He). Here: `test_acc: norm=batch batch_size=2")
    assert "-40.00 points" in line


def test_another_table_of_the_same_runs_keeps_the_rows_at_the_tuned_values():
    rows = [dict(norm=norm, learning_rate=lr, seed=seed, epoch=1, val_acc=0.9 if lr == 0.1 else 0.8)
            for norm in ("batch", "power") for lr in (0.1, 0.4) for seed in SEEDS]  # fmt: skip
    _, choices = tune(table(rows), ("learning_rate",))
    layers = {**table(rows * 2), "layer": np.repeat([1, 2], len(rows))}
    kept = at_choices(layers, choices)
    assert set(kept["learning_rate"]) == {0.1} and len(kept["layer"]) == 2 * 2 * len(SEEDS)
