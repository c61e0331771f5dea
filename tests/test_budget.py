"""The guard on size: `show` and `run` estimate a sweep's memory from traced shapes, and `run` refuses one that
cannot fit before anything is compiled or written."""

import dataclasses

import pytest

from normbench.cli import main
from normbench.config import load_config
from normbench.core import budget
from normbench.data import load

# 2 norms x 2,000 seeds x 2,000 init scales: 8,000,000 runs.
HUGE = [
    "--set",
    "sweep.seeds=" + ",".join(map(str, range(2000))),
    "--set",
    "sweep.init_scales=" + ",".join(f"{1 + i / 2000:.6f}" for i in range(2000)),
]


def test_show_prints_the_estimate(capsys):
    assert main(["show", "configs/init_scale.py"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "MiB for the largest 2 cells training at once" in last
    assert "18,336 run-steps in all" in last  # 96 runs x 191 steps (20 epochs of 10, the first cut to 1)


def test_run_refuses_a_sweep_too_large_before_touching_the_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "configs/init_scale.py", *HUGE, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: the sweep needs about ") and err.count("\n") == 1, err
    assert "MiB available" in err
    assert not out.exists()


def test_the_estimate_grows_with_runs_and_the_limit_decides():
    config = load_config("configs/init_scale.py")
    dataset = load(config.data)
    small = budget.estimate(config, dataset, workers=2)
    assert small.peak_bytes > small.data_bytes
    budget.check_memory(small, available=small.peak_bytes)
    limit = f"more than the {(small.peak_bytes - 1) / budget.MIB:,.0f} MiB available"
    with pytest.raises(budget.ConfigError, match=limit):
        budget.check_memory(small, available=small.peak_bytes - 1)
    assert budget.estimate(config, dataset, workers=1).peak_bytes < small.peak_bytes


def test_the_estimate_is_kept_and_a_repeated_run_does_not_trace(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMBENCH_CACHE", str(tmp_path))
    config = load_config("configs/init_scale.py")
    dataset = load(config.data)
    first = budget.estimate(config, dataset, workers=2)

    def no_tracing(*args):
        raise AssertionError("traced again")

    monkeypatch.setattr(budget, "_estimate", no_tracing)
    assert budget.estimate(config, dataset, workers=1) == dataclasses.replace(first, workers=1)
    with pytest.raises(AssertionError, match="traced again"):  # another config is another entry
        budget.estimate(dataclasses.replace(config, name="other"), dataset, workers=2)
