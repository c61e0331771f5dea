"""Tuning that cannot hide at a grid's edge: a choice at the first or last value of its grid trains the next value
beyond it and chooses again (`normbench.results.tuning`), up to `report.tune_extensions` steps each way; the real
CLI on a tiny MLP, killed mid-extension and resumed, and redrawn by `normbench plot`."""

import dataclasses
import json
import shutil
import signal

import numpy as np
import pytest
from conftest import tiny_config
from test_resume import finish, normbench

from normbench.cli import main
from normbench.config import ConfigError, ReportConfig
from normbench.core.axes import run_columns
from normbench.core.grid import cells, plan
from normbench.reports.summary import LIMIT_REACHED, NOT_EXTENDED, tuning_section
from normbench.results.claims import tune
from normbench.results.store import read_metrics
from normbench.results.tuning import Extension, configurations, edges, extension_text, next_round, step_value
from normbench.validate import validate

# 128 training images, 2 epochs of 8 steps: validation accuracy rises from rate 0.05 to 0.1 and on to 0.2 (0.27,
# 0.37, 0.47 over the two seeds on 128 validation images), so the grid's largest rate is chosen and the first
# extension, 0.2, beats it.
STUDY = """
from normbench.config import Config, DataConfig, ModelConfig, ReportConfig, SweepConfig, TrainConfig


def get_config():
    return Config(
        name="tiny_tuned",
        data=DataConfig(source="mnist5k", n_train=128, n_val=128, n_test=32),
        model=ModelConfig(hidden=(8, 8), init="he"),
        train=TrainConfig(epochs=2, eval_batch_size=16),
        sweep=SweepConfig(norms=("batch",), batch_sizes=(16,), seeds=(0, 1), learning_rates=(0.05, 0.1)),
        report=ReportConfig(tune=("learning_rate",)),
    )
"""
ROWS_PER_RATE = 2 * 2  # seeds x epochs


def tuned(limit: int = 2, **sweep):
    """A tiny config that tunes the learning rate over `sweep`'s grid (default 0.05, 0.1)."""
    config = tiny_config(**{"learning_rates": (0.05, 0.1), "init_scales": (1.0,), **sweep})
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, n_val=32))
    return dataclasses.replace(config, report=ReportConfig(tune=("learning_rate",), tune_extensions=limit))


def table(config, extensions=(), score=lambda run: run["learning_rate"]):
    """The rows of the last epoch of every run of `config`'s cells and of `extensions` (their columns as metrics.csv
    orders them), with val_acc = `score(run key)`."""
    runs = [run for cell in cells(config) for run in plan(config, cell).keys()]
    runs += [run for e in extensions for run in plan(e.config(config), e.restrict(cells(config)[e.cell])).keys()]
    columns = {c: np.array([run[c] for run in runs]) for c in run_columns(config)}
    return {**columns, "epoch": np.ones(len(runs), int), "val_acc": np.array([score(run) for run in runs]),
            "diverged": np.zeros(len(runs), int)}  # fmt: skip


def everywhere(config, cell: int) -> tuple:
    """Every configuration of the config's cell number `cell`."""
    return tuple(configurations(config, cells(config)[cell]))


def up(config, cell: int, step: int) -> Extension:
    """The learning rate `step` steps above the grid for every configuration of cell number `cell`."""
    return Extension(cell, "learning_rate", 1, step, everywhere(config, cell))


def test_only_the_configurations_at_an_edge_train_its_extension():
    """Two init scales share a cell: the rate rises with accuracy at 1.0 and falls at 0.5, so only 1.0 chooses the
    largest rate and trains the next one, and only 0.5 the smallest. The extension's cell holds those runs alone."""
    config = tuned(init_scales=(0.5, 1.0))
    score = lambda run: run["learning_rate"] * (1 if run["init_scale"] == 1.0 else -1)  # noqa: E731
    new = next_round(config, edges(config, [table(config, score=score)]), [])
    assert [(e.direction, e.points) for e in new] == [
        (-1, ((("init_scale", 0.5), ("ghost_size", 8)),)),
        (1, ((("init_scale", 1.0), ("ghost_size", 8)),)),
    ]
    cell = cells(config)[0]
    for extension in new:
        runs = plan(extension.config(config), extension.restrict(cell)).keys()
        assert {run["init_scale"] for run in runs} == {dict(extension.points[0])["init_scale"]}
        assert len(runs) == plan(config, cell).run_count // 4, "one of 2 scales at one of 2 rates"


def test_learning_rates_step_by_2_and_other_axes_by_their_outer_ratio():
    config = tuned(learning_rates=(0.05, 0.1, 0.2), init_scales=(0.1, 0.3, 1.0))
    assert [step_value(config, "learning_rate", 1, s) for s in (1, 2)] == [0.4, 0.8]
    assert [step_value(config, "learning_rate", -1, s) for s in (1, 2)] == [0.025, 0.0125]
    assert [step_value(config, "init_scale", 1, s) for s in (1, 2)] == [pytest.approx(10 / 3), pytest.approx(100 / 9)]
    assert [step_value(config, "init_scale", -1, s) for s in (1, 2)] == [pytest.approx(1 / 30), pytest.approx(1 / 90)]


@pytest.mark.parametrize(
    "sweep, tune_axis, message",
    [
        ({"fields": {"train.weight_decay": (0.0, 1e-4)}}, "train.weight_decay", "its smallest values, have no ratio"),
        ({"init_scales": (1.0,)}, "init_scale", "has one value, so no ratio"),
        ({"batch_sizes": (8, 16)}, "batch_size", "only a value axis"),
        ({}, "ghost_size", "only a value axis"),
        ({"fields": {"norm.momentum": (0.5, 0.9)}}, "norm.momentum", "would extend norm.momentum to 1.62"),
    ],
)
def test_an_axis_whose_grid_has_no_next_value_is_refused_unless_extensions_are_off(sweep, tune_axis, message):
    config = tuned(**sweep)
    config = dataclasses.replace(config, report=ReportConfig(tune=(tune_axis,), tune_extensions=2))
    with pytest.raises(ConfigError, match=message):
        validate(config)
    validate(dataclasses.replace(config, report=ReportConfig(tune=(tune_axis,), tune_extensions=0)))


def test_a_negative_limit_is_refused():
    with pytest.raises(ConfigError, match="tune_extensions must be at least 0"):
        validate(tuned(limit=-1))


def test_an_edge_calls_for_one_step_that_way_in_its_cell_until_the_limit():
    """Rising validation accuracy: the batch-8 cell chooses its largest rate; at batch 16 it falls, so that cell
    chooses its smallest. Each steps its own way, one step a round, none past the limit."""
    config = tuned(batch_sizes=(8, 16))
    by_cell = lambda run: run["learning_rate"] * (1 if run["batch_size"] == 8 else -1)  # noqa: E731

    def per_cell(history):
        rows = table(config, history, by_cell)
        return [{k: v[rows["batch_size"] == batch] for k, v in rows.items()} for batch in (8, 16)]

    history = []
    for step in (1, 2):
        new = next_round(config, edges(config, per_cell(history)), history)
        assert new == [up(config, 0, step), Extension(1, "learning_rate", -1, step, everywhere(config, 1))]
        history += new
    assert [e.value(config) for e in history] == [0.2, 0.025, 0.4, 0.0125]
    assert {type(e.value(config)) for e in history} == {float}, "metrics.csv writes a float's repr as the rate"
    assert edges(config, per_cell(history)).any(), "still at the edges, but with no step left"
    assert next_round(config, edges(config, per_cell(history)), history) == []


def test_a_grid_of_one_value_is_at_both_edges():
    config = tuned(learning_rates=(0.1,))
    (choice,) = tune(table(config), ("learning_rate",))[1]
    assert choice.edges() == (("learning_rate", -1), ("learning_rate", 1))


def test_summary_lists_the_searched_grid_and_says_whether_the_limit_stopped_the_search():
    config = tuned(limit=1)
    extended = [up(config, 0, 1)]
    (line,) = [s for s in tuning_section(tune(table(config, extended), ("learning_rate",))[1], config) if "| mlp" in s]
    assert "| 0.05, 0.1, _0.2_ | 0.2 (edge: extension limit reached) |" in line
    # With a limit of 2, these runs stopped a step short: said so, never silently.
    config = tuned(limit=2)
    section = "\n".join(tuning_section(tune(table(config, extended), ("learning_rate",))[1], config))
    assert f"0.2 {NOT_EXTENDED}" in section and "rerun the study to extend it" in section
    # A choice inside the searched grid is no edge.
    inside = lambda run: -abs(run["learning_rate"] - 0.1)  # noqa: E731
    section = tuning_section(tune(table(config, extended, inside), ("learning_rate",))[1], config)
    (line,) = [s for s in section if s.startswith("| mlp")]
    assert "| 0.05, 0.1, _0.2_ | 0.1 |" in line


def test_the_searched_grid_of_each_configuration_is_its_own_cell_s_rates_as_scaled_with_its_batch():
    """With linear scaling, batch 8 runs the config's rates at half their value: its own grid is (0.025, 0.05), and
    only the extension's 0.1 lies beyond it, while 0.1 is batch 16's own (whose cell these runs did not extend)."""
    config = tuned(limit=1, batch_sizes=(8, 16))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr_reference_batch=16))
    columns = table(config, [up(config, 0, 1)])
    lines = [s for s in tuning_section(tune(columns, ("learning_rate",))[1], config) if s.startswith("| mlp")]
    assert [line.split(" | ")[-3:-1] for line in lines] == [
        ["0.05, 0.1", f"0.1 {NOT_EXTENDED}"],
        ["0.025, 0.05, _0.1_", f"0.1 {LIMIT_REACHED}"],
    ]


def test_show_states_what_extensions_may_add_at_worst():
    config = tuned(limit=2, batch_sizes=(8, 16))
    runs = sum(plan(config, cell).run_count for cell in cells(config))
    text = extension_text(config)
    assert "0.0125, 0.025 below, 0.2, 0.4 above" in text
    # 2 steps each way on a grid of 2 rates: twice the runs, 4 programs a cell
    assert f"at worst {2 * runs} more runs (+200%) in 8 more programs" in text
    assert extension_text(tuned(limit=0)) == ""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny study run by the CLI with its default limit (2), and with report.tune_extensions=0."""
    root = tmp_path_factory.mktemp("tuning")
    config = root / "tiny_tuned.py"
    config.write_text(STUDY)
    off = root / "off.py"
    off.write_text(STUDY.replace('tune=("learning_rate",)', 'tune=("learning_rate",), tune_extensions=0'))
    for path, out in ((config, root / "extended"), (off, root / "off")):
        code, output = finish(normbench(path, out))
        assert code == 0, output
    return config, root / "extended", root / "off"


@pytest.mark.slow
def test_a_rate_chosen_at_the_top_edge_extends_the_grid_and_is_chosen_again(runs):
    _, extended, off = runs
    # Limit 0: the grid alone, its largest rate chosen at the edge, and said so.
    assert len(read_metrics(off)["epoch"]) == 2 * ROWS_PER_RATE
    assert f"| 0.1 {LIMIT_REACHED} |" in (off / "summary.md").read_text()
    # Extended: the same rows first, then 0.2 (which beats 0.1) and, 0.2 being the new edge, 0.4.
    assert (extended / "metrics.csv").read_bytes().startswith((off / "metrics.csv").read_bytes())
    rates = read_metrics(extended)["learning_rate"]
    assert list(np.unique(rates)) == [0.05, 0.1, 0.2, 0.4] and len(rates) == 4 * ROWS_PER_RATE
    saved = json.loads((extended / "config.json").read_text())
    assert saved["searched_grids"] == {"mlp batch sgd batch=16": {"learning_rate": [0.05, 0.1, 0.2, 0.4]}}
    assert saved["config"]["sweep"]["learning_rates"] == [0.05, 0.1], "the config stays as given: a rerun resumes"
    summary = (extended / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| mlp | batch"))  # the chosen-values table
    assert "| 0.05, 0.1, _0.2_, _0.4_ |" in row
    chosen = row.split(" | ")[-2]
    assert chosen in ("0.2", f"0.4 {LIMIT_REACHED}"), row
    assert NOT_EXTENDED not in summary


@pytest.mark.slow
def test_a_run_killed_mid_extension_resumes_to_the_same_bytes(runs, tmp_path):
    config, extended, _ = runs
    out = tmp_path / "out"
    # Killed once the first extension (cell 1) is kept, then as the second one's rows are being written.
    for point in ("kept:1", "write:0002.csv"):
        code, output = finish(normbench(config, out, kill_at=point, workers=1))
        assert code == -signal.SIGKILL, (point, output)
    code, output = finish(normbench(config, out))
    assert code == 0, output
    assert output.count("resuming: 1 of 1 cells already finished") == 2, output  # the study's cell and 0.2's
    for name in ("metrics.csv", "summary.md"):
        assert (out / name).read_bytes() == (extended / name).read_bytes(), name
    searched = json.loads((out / "config.json").read_text())["searched_grids"]
    assert searched == json.loads((extended / "config.json").read_text())["searched_grids"]


@pytest.mark.slow
def test_plot_redraws_the_summary_of_an_extended_grid_without_retraining(runs, tmp_path):
    _, extended, _ = runs
    out = tmp_path / "copy"
    shutil.copytree(extended, out)
    (out / "summary.md").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "summary.md").read_bytes() == (extended / "summary.md").read_bytes()
    assert "| 0.05, 0.1, _0.2_, _0.4_ |" in (out / "summary.md").read_text(), "the searched grid, from metrics.csv"
    assert (out / "metrics.csv").read_bytes() == (extended / "metrics.csv").read_bytes()
