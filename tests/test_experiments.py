"""The analysis scripts of experiments/ on the committed results."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.compare_sweeps import compare, plot

SMALL_BATCH = Path(__file__).resolve().parent.parent / "results" / "small_batch"


def test_compare_sweeps_lines_up_the_configurations_of_two_sweeps(tmp_path):
    # B: the small-batch study without GroupNorm, and with BatchNorm's test accuracy 0.1 lower
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(SMALL_BATCH / "config.json", b)
    df = pd.read_csv(SMALL_BATCH / "metrics.csv")
    df = df[df.norm != "group"]
    df.loc[df.norm == "batch", "test_acc"] -= 0.1
    df.to_csv(b / "metrics.csv", index=False)
    table = compare(SMALL_BATCH, b)
    assert len(table) == 56  # 2 models x (7 sgd + 7 ghost batch, 7 layer, 7 group)
    norms = table.index.get_level_values("norm")
    np.testing.assert_allclose(table["B - A"][norms == "batch"], -0.1, atol=1e-9)
    np.testing.assert_array_equal(table["B - A"][norms == "layer"], 0.0)
    assert table["B"][norms == "group"].isna().all() and table["A"][norms == "group"].notna().all()
    plot(SMALL_BATCH, b, "test_acc", tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 10_000
