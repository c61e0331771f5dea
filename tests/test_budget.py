"""The guard on size: `show` and `run` estimate a sweep's memory from traced shapes, and `run` refuses one that
cannot fit before anything is compiled or written."""

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
    assert "18,336 run-steps in all" in last  # 96 runs x the textbook's 191 steps (1 + 19 epochs x 10)


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
    with pytest.raises(budget.ConfigError, match=r"more than the [\d,]+ MiB available"):
        budget.check_memory(small, available=small.peak_bytes - 1)
    assert budget.estimate(config, dataset, workers=1).peak_bytes < small.peak_bytes
