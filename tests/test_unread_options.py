"""A swept value field that a cell's norm never reads is not swept for that cell: it trains the first value alone,
whose run stands for every value, `show` says how many runs that saves and summary.md says which rows stand for
all. Safe only because a norm reads no option its `options` leave out, which the first test holds every norm to."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import study_text, tiny_config, tiny_dataset

from normbench.catalog import config_text
from normbench.cli import main
from normbench.config import NormConfig, add_sweeps, load_config, set_fields
from normbench.core.axes import VALUE_FIELDS
from normbench.core.grid import cells, plan, unread_fields
from normbench.core.sweep import run_sweep
from normbench.norms import NORMS
from normbench.norms.registry import WHOLE_BATCH
from normbench.results.store import metrics_csv, parse_metrics

INIT_SCALE = Path(__file__).resolve().parents[1] / "configs" / "init_scale.py"
NORM_VALUE_OPTIONS = [field.removeprefix("norm.") for field in VALUE_FIELDS if field.startswith("norm.")]
# Two values of each, far apart; 2 groups divide the 4 channels below.
TWO_VALUES = {"momentum": (0.9, 0.3), "epsilon": (1e-5, 0.5), "running_var_init": (1.0, 0.0)}
BASE = NormConfig(num_groups=2, renorm_train_steps=100)


def test_every_value_option_of_a_norm_has_two_values_here():
    assert set(TWO_VALUES) == set(NORM_VALUE_OPTIONS)


@pytest.mark.parametrize("name", NORMS)
def test_a_norm_reads_no_value_option_its_options_leave_out(name):
    """Train mode (output and running statistics), initial variables and eval mode after a step: the same bits
    at either value of an option the norm does not list."""
    spec = NORMS[name]
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 3, 4)) * 2 + 1.5
    for option in (o for o in NORM_VALUE_OPTIONS if o not in spec.options):
        runs = []
        for value in TWO_VALUES[option]:
            config = dataclasses.replace(BASE, **{option: value})
            train = spec.make(config, WHOLE_BATCH)(True)
            variables = train.init(jax.random.PRNGKey(1), x)
            y, updates = train.apply(variables, x, mutable=["batch_stats"])
            evaluated = spec.make(config, WHOLE_BATCH)(False).apply({**variables, **updates}, x * 0.5)
            runs.append(jax.tree.leaves((variables, y, updates, evaluated)))
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} reads norm.{option}, which its options leave out")


def test_the_init_scale_study_swept_over_epsilon_trains_none_once():
    """48 runs without a norm (16 scales x 3 seeds, epsilon unread) and 96 with BN (at both epsilons): 144, not
    192."""
    config = add_sweeps(load_config(INIT_SCALE), ["norm.epsilon=1e-5,1e-3"])
    runs = {cell.norm: plan(config, cell).run_count for cell in cells(config)}
    assert runs == {"batch": 96, "none": 48}
    assert unread_fields(config, "none") == {"norm.epsilon": 1e-5} and unread_fields(config, "batch") == {}
    assert set(plan(config, cells(config)[1]).run_values["norm.epsilon"]) == {1e-5}
    text = config_text(config)
    assert "144 runs of 20 epochs" in text
    assert "# none reads no norm.epsilon: its runs train once, at norm.epsilon=1e-05, which stands for every value " \
           "(48 runs saved)" in text  # fmt: skip


def test_a_field_every_norm_reads_is_swept_for_every_cell():
    config = add_sweeps(tiny_config(norms=("batch", "none")), ["train.weight_decay=0,0.01"])
    assert [plan(config, cell).run_count for cell in cells(config)] == [8, 8]
    assert "saved" not in config_text(config)


@pytest.mark.slow
def test_the_run_of_the_first_value_is_the_run_at_every_other(tmp_path):
    """A norm=none run at norm.epsilon=1e-3, trained on its own, equals the swept study's none run labelled 1e-5."""
    dataset = tiny_dataset()
    swept = add_sweeps(tiny_config(norms=("batch", "none")), ["norm.epsilon=1e-5,1e-3"])
    table = parse_metrics(metrics_csv(swept, run_sweep(swept, dataset, workers=1)))
    alone = set_fields(tiny_config(norms=("none",)), {"norm.epsilon": 1e-3})
    other = parse_metrics(metrics_csv(alone, run_sweep(alone, dataset, workers=1)))
    none = table["norm"] == "none"
    assert set(table["norm.epsilon"][none]) == {1e-5} and none.sum() == len(other["epoch"])
    assert set(table["norm.epsilon"][~none]) == {1e-5, 1e-3}
    for column in ("train_loss", "train_acc", "test_acc"):
        np.testing.assert_array_equal(table[column][none], other[column], err_msg=column)


@pytest.mark.slow
def test_the_cli_trains_the_unread_value_once_and_summary_says_which_rows_stand_for_all(tmp_path, capsys):
    config = tmp_path / "tiny.py"
    config.write_text(study_text())  # batch and none, 2 init scales, 2 seeds, 2 epochs
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--sweep", "norm.epsilon=1e-5,1e-3", "--quiet"]) == 0
    table = parse_metrics((out / "metrics.csv").read_text())
    none = table["norm"] == "none"
    assert none.sum() == 2 * 2 * 2 and (~none).sum() == 2 * 2 * 2 * 2  # scales x seeds x epochs (x epsilons)
    summary = (out / "summary.md").read_text()
    assert "`none` reads no norm.epsilon: its runs trained once, at norm.epsilon = 1e-05, and each row" in summary
