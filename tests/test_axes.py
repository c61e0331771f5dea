"""Sweep axes: any config field sweeps, static and value sweeps of a field compute the same runs, and the tables,
summary and figures group by a swept field."""

import dataclasses
import re

import numpy as np
import pytest
from conftest import study_text, tiny_config, tiny_dataset

from normbench.cli import main
from normbench.config import ConfigError, add_sweeps, set_fields
from normbench.core import axes, grid
from normbench.core.axes import STATIC, VALUE
from normbench.core.grid import cells, plan
from normbench.core.sweep import run_sweep
from normbench.results.store import metrics_csv, parse_metrics
from normbench.validate import validate

SWEEPS = {
    "norm.momentum": (0.5, 0.9),
    "norm.epsilon": (1e-5, 1e-2),
    "norm.running_var_init": (1.0, 0.0),
    "train.momentum": (0.0, 0.9),
    "train.weight_decay": (0.0, 0.05),
    "train.warmup_fraction": (0.0, 0.5),
}


def swept(field, values, **sweep):
    config = add_sweeps(tiny_config(init_scales=(1.0,), **sweep), [f"{field}={','.join(map(str, values))}"])
    if field == "train.warmup_fraction":  # read by the cosine schedule only
        config = set_fields(config, {"train.schedule": "cosine"})
    return config


def test_every_built_in_value_field_is_declared_a_value_axis():
    assert set(SWEEPS) == set(axes.VALUE_FIELDS)


@pytest.mark.slow
@pytest.mark.parametrize("field", SWEEPS)
def test_a_static_and_a_value_sweep_of_a_field_give_the_same_numbers(field, monkeypatch):
    config, dataset = swept(field, SWEEPS[field]), tiny_dataset()
    value = metrics_csv(config, run_sweep(config, dataset, workers=1))
    assert len(cells(config)) == 1
    # The same field declared static: one program per value, the same table.
    monkeypatch.setattr(axes, "VALUE_FIELDS", tuple(f for f in axes.VALUE_FIELDS if f != field))
    assert len(cells(config)) == 2 and axes.kind(field) == STATIC
    static = metrics_csv(config, run_sweep(config, dataset, workers=1))
    value_rows, static_rows = (parse_metrics(t) for t in (value, static))
    assert set(np.unique(value_rows[field])) == set(SWEEPS[field])
    order = np.lexsort([static_rows[c] for c in reversed(axes.key_columns(static_rows) + ["epoch"])])
    reorder = np.lexsort([value_rows[c] for c in reversed(axes.key_columns(value_rows) + ["epoch"])])
    for column in ("train_loss", "train_acc", "test_acc"):
        np.testing.assert_allclose(static_rows[column][order], value_rows[column][reorder], rtol=1e-5, atol=1e-6)
    # and the field's two values trained (or, for BN's running-average momentum, evaluated) differently
    first = value_rows[field] == SWEEPS[field][0]
    assert any(
        not np.allclose(value_rows[column][first], value_rows[column][~first])
        for column in ("train_loss", "train_acc", "test_acc")
    )


def test_a_static_field_makes_one_cell_per_value_and_a_value_field_none():
    config = add_sweeps(tiny_config(norms=("group",)), ["norm.num_groups=1,2,4", "norm.epsilon=1e-5,1e-3"])
    assert [c.fields for c in cells(config)] == [(("norm.num_groups", g),) for g in (1, 2, 4)]
    values = plan(config, cells(config)[0]).run_values
    assert values["norm.epsilon"] == (1e-5, 1e-3) * 2 and values["init_scale"] == (1.0, 1.0, 0.1, 0.1)
    keys = plan(config, cells(config)[1]).keys()
    assert [(k["seed"], k["init_scale"], k["norm.num_groups"], k["norm.epsilon"]) for k in keys[:2]] == [
        (0, 1.0, 2, 1e-5), (0, 1.0, 2, 1e-3)
    ]  # fmt: skip
    assert grid.plan(config, cells(config)[2]).config.norm.num_groups == 4
    assert axes.run_columns(config)[-2:] == ("norm.num_groups", "norm.epsilon")


@pytest.mark.parametrize(
    "pair, message",
    [
        ("name=a,b", "name cannot be a sweep axis: it names the whole sweep"),
        ("data.n_train=10,20", "data.n_train cannot be a sweep axis: a sweep trains on one data set"),
        ("train.epochs=1,2", "train.epochs cannot be a sweep axis"),
        ("norm.num_groups=3", "divide"),
        ("norm.epsilon=1e-3,-1", "norm.epsilon (-1.0) must be positive"),
        ("train.momentum=0.5,1.5", "train.momentum (1.5) must be in [0, 1)"),
        ("norm.epsilon=1e-3,1e-3", "repeats a value"),
    ],
)
def test_an_unsweepable_field_or_a_bad_value_is_one_clear_error(pair, message):
    config = tiny_config(norms=("group",))
    config = dataclasses.replace(config, norm=dataclasses.replace(config.norm, num_groups=2))
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(add_sweeps(config, [pair]))


@pytest.mark.parametrize(
    "pair, message",
    [
        ("norm.nope=1", "unknown config key 'norm.nope'"),
        ("sweep.seeds=1,2", "--sweep takes a field of one value"),
        ("norm.num_groups=a", "expects a comma-separated list of integers"),
        ("norm.epsilon", "--sweep expects key=value"),
    ],
)
def test_a_malformed_sweep_is_one_clear_error(pair, message):
    with pytest.raises(ConfigError, match=message):
        add_sweeps(tiny_config(), [pair])


def test_sweeping_a_field_in_a_config_file_and_from_the_cli_is_the_same(tmp_path, capsys):
    path = tmp_path / "file.py"
    path.write_text(
        study_text(sweep='SweepConfig(norms=("batch",), batch_sizes=(16,), fields={"norm.epsilon": (1e-5, 1e-3)})')
    )
    assert main(["show", str(path)]) == 0
    from_file = capsys.readouterr().out
    plain = tmp_path / "plain.py"
    plain.write_text(study_text(sweep='SweepConfig(norms=("batch",), batch_sizes=(16,))'))
    assert main(["show", str(plain), "--sweep", "norm.epsilon=1e-5,1e-3"]) == 0
    assert capsys.readouterr().out == from_file
    assert "norm.epsilon" in from_file and "value " in from_file.split("norm.epsilon")[-1]


@pytest.mark.slow
def test_the_cli_writes_a_swept_column_and_the_summary_and_figure_group_by_it(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(
        study_text(sweep='SweepConfig(norms=("batch", "none"), batch_sizes=(16,), init_scales=(1.0, 0.1), seeds=(0,))')
    )
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--sweep", "norm.epsilon=1e-5,1e-3"]) == 0
    table = parse_metrics((out / "metrics.csv").read_text())
    assert set(table["norm.epsilon"]) == {1e-5, 1e-3}
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("epoch") - 1] == "norm.epsilon"
    summary = (out / "summary.md").read_text()
    assert "| norm.epsilon |" in summary and "| batch | sgd | 16 | 1 | 0.01 | 1e-05 |" in summary
    assert main(["report", str(out)]) == 0
    assert "norm.epsilon" in (out / "report.html").read_text()


def test_a_norm_in_a_protocol_it_cannot_use_gets_no_cell_and_one_without_batch_statistics_one_size():
    config = tiny_config(norms=("batch", "layer"), batch_sizes=(4, 8))
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, protocols=("sgd", "ghost", "sync")))
    assert [(c.norm, c.protocol, c.batch_size) for c in cells(config)] == [
        ("batch", "sgd", 4), ("batch", "sgd", 8), ("batch", "ghost", 8), ("batch", "sync", 4), ("batch", "sync", 8),
        ("layer", "sgd", 4), ("layer", "sgd", 8), ("layer", "ghost", 8),
    ]  # fmt: skip
    # LayerNorm reads no batch statistic, so under ghost it trains once, at the SGD batch, not once per group size
    assert [plan(config, c).stat_sizes for c in cells(config) if c.protocol == "ghost"] == [(4, 8), (8,)]
    assert axes.kind("norm.num_groups") == STATIC and axes.kind("norm.epsilon") == VALUE
