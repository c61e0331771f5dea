"""The analysis scripts under experiments/ read a results directory and follow summary.md's policies."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parent.parent / "experiments" / "final_accuracy.py"


def test_final_accuracy_leaves_diverged_runs_out_of_its_means_and_counts_them():
    spec = importlib.util.spec_from_file_location("final_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    columns = {
        "norm": np.array(["none"] * 3),
        "init_scale": np.array([1.0] * 3),
        "epoch": np.array([2] * 3),
        "train_acc": np.array([0.5, 0.7, 0.1]),
        "diverged": np.array([0, 0, 1]),
    }
    values, diverged = module.final_accuracy(columns)[("none", 1.0)]
    np.testing.assert_array_equal(values, [0.5, 0.7])
    assert diverged == 1
    assert module.cell(values, diverged) == "0.600 [0.500, 0.700] (1 div.)"
