"""The Python API of docs/tutorial.md: normbench.run, normbench.load, normbench.register_norm."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import study_text, tiny_config

import normbench
from normbench.config import ConfigError
from normbench.errors import UserError
from normbench.norms import NORMS


@pytest.fixture
def my_layer():
    spec = normbench.register_norm(dataclasses.replace(NORMS["layer"], name="my_layer"))
    yield spec
    del NORMS["my_layer"]


@pytest.mark.slow
def test_run_a_config_file_with_overrides_into_runs_then_load_it(my_layer, tmp_path, monkeypatch):
    config = tmp_path / "tiny.py"
    config.write_text(study_text())
    monkeypatch.chdir(tmp_path)
    out = normbench.run(config, train__epochs=1, **{"sweep.norms": ("my_layer",), "sweep.init_scales": 1})
    assert out == Path("runs/tiny") and not (out / ".lock").exists()
    df = normbench.load(out)
    assert df.shape[0] == 2  # 2 seeds x 1 init scale x 1 epoch
    assert set(df.norm) == {"my_layer"} and {"test_acc", "seed", "init_scale"} <= set(df.columns)
    assert df.attrs["config"]["train"]["epochs"] == 1 and df.attrs["config"]["sweep"]["init_scales"] == [1.0]


def test_load_is_the_table_with_its_config(study):
    _, out = study
    df = normbench.load(out)
    assert df.shape == (16, len(df.columns))  # norms x init scales x seeds x epochs, as test_cli reads it
    assert df.attrs["config"]["name"] == "tiny" and list(df.columns[:2]) == ["model", "norm"]


def test_overrides_are_checked_like_set_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        normbench.run(tiny_config(), tmp_path, train__epochs="two")
    with pytest.raises(ConfigError, match="unknown norm"):
        normbench.run(tiny_config(), tmp_path, sweep__norms=("weird",))
    assert list(tmp_path.iterdir()) == []


def test_load_says_when_a_directory_holds_no_results(tmp_path):
    with pytest.raises(UserError, match="results directory"):
        normbench.load(tmp_path)


def test_a_registered_name_is_not_silently_replaced(my_layer):
    with pytest.raises(ValueError, match="already registered"):
        normbench.register_norm(dataclasses.replace(NORMS["batch"], name="my_layer"))
    assert normbench.register_norm(my_layer, replace=True) is NORMS["my_layer"]


def test_import_normbench_loads_neither_jax_nor_pandas():
    code = "import sys, normbench; print(sorted({'jax', 'flax', 'pandas'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
