"""`normbench compare` on three sweeps made from the committed small-batch results, whose differences are known."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normbench.cli import main
from normbench.reports.compare import NOT_SIGNIFICANT, compare

SMALL_BATCH = Path(__file__).resolve().parent.parent / "results" / "small_batch"


def sweep(root: Path, name: str, change) -> Path:
    out = root / name
    out.mkdir()
    (out / "config.json").write_bytes((SMALL_BATCH / "config.json").read_bytes())
    change(pd.read_csv(SMALL_BATCH / "metrics.csv")).to_csv(out / "metrics.csv", index=False)
    return out


def without_group_and_bn_lower(df):
    df = df[df.norm != "group"].copy()
    df.loc[df.norm == "batch", "test_acc"] -= 0.1
    return df


def three_seeds_shifted(df):
    # LayerNorm 0.05 higher at every seed; BatchNorm higher by 0, 0.01 and 0.02 at seeds 0, 1, 2
    df = df[df.seed <= 2].copy()
    df.loc[df.norm == "layer", "test_acc"] += 0.05
    df.loc[df.norm == "batch", "test_acc"] += 0.01 * df.seed
    return df


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return SMALL_BATCH, sweep(root, "b", without_group_and_bn_lower), sweep(root, "c", three_seeds_shifted)


def test_compare_pairs_three_sweeps_by_seed(sweeps):
    table = compare(sweeps)
    # 1 model x 3 norms x 4 batches x 4 learning rates, and the 7 rates that tuning extensions added at edges
    assert len(table) == 55
    norms = table.index.get_level_values("norm")
    b, c = table["b - small_batch"], table["c - small_batch"]
    np.testing.assert_allclose(b["diff"][norms == "batch"], -0.1, atol=1e-6)
    assert (b["±95%"][norms == "batch"] < 1e-6).all() and (b["note"][norms == "batch"] == "").all()
    assert (b["diff"][norms == "layer"] == 0).all() and (b["note"][norms == "layer"] == NOT_SIGNIFICANT).all()
    assert b["diff"][norms == "group"].isna().all() and (b["seeds"][norms == "group"] == 0).all()
    assert table[("mean", "b")][norms == "group"].isna().all()
    assert (c["seeds"] == 3).all() and (b["seeds"][norms != "group"] == 5).all()
    np.testing.assert_allclose(c["diff"][norms == "layer"], 0.05, atol=1e-6)
    assert (c["note"][norms == "layer"] == "").all()
    # differences 0, 0.01, 0.02: mean 0.01, half-width t(0.975, 2 dof) x 0.01 / sqrt(3), which holds 0
    np.testing.assert_allclose(c["diff"][norms == "batch"], 0.01, atol=1e-6)
    np.testing.assert_allclose(c["±95%"][norms == "batch"], 4.302653 * 0.01 / np.sqrt(3), atol=2e-6)
    assert (c["note"][norms == "batch"] == NOT_SIGNIFICANT).all()


def test_the_compare_command_prints_the_table_and_draws_the_figure(sweeps, tmp_path, capsys):
    assert main(["compare", *map(str, sweeps), "--plot", str(tmp_path / "compare.png")]) == 0
    out = capsys.readouterr().out
    assert "c - small_batch" in out and NOT_SIGNIFICANT in out
    assert (tmp_path / "compare.png").stat().st_size > 10_000


@pytest.mark.parametrize("other", ["missing", "not_results"])
def test_compare_says_in_one_line_which_directory_is_no_results_directory(sweeps, tmp_path, other, capsys):
    (tmp_path / "not_results").mkdir()
    assert main(["compare", str(sweeps[0]), str(tmp_path / other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("normbench: error: ") and other in err[0]


def test_compare_needs_two_directories(capsys):
    assert main(["compare", str(SMALL_BATCH)]) == 2
    assert "at least two" in capsys.readouterr().err
