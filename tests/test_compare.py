"""`normbench compare` on three sweeps made from the committed init-scale results, whose differences are known:
the committed results themselves (some runs diverged), their seeds 0 and 1, and a copy whose BatchNorm test
accuracy is higher by 0.01 x seed and which ran one init scale fewer and another weight decay."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot

from normbench.cli import main
from normbench.reports.compare import compare, read_sweeps
from normbench.reports.summary import summary_markdown
from normbench.results.reader import ResultsWarning
from normbench.results.store import number, read_config, read_metrics

INIT_SCALE = Path(__file__).resolve().parent.parent / "results" / "init_scale"
LEFT_OUT = 0.0001  # the init scale that the third sweep did not run


def sweep(root: Path, name: str, keep=lambda row: True, change=lambda row: row, config=lambda c: c) -> Path:
    """A copy of the init-scale results with the rows that `keep`, each as `change` makes it (a dict of column
    -> text), and config.json's config as `config` makes it."""
    out = root / name
    out.mkdir()
    saved = json.loads((INIT_SCALE / "config.json").read_text())
    saved["config"] = config(saved["config"])
    (out / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    rows = list(csv.DictReader(io.StringIO((INIT_SCALE / "metrics.csv").read_text())))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(change(dict(row)) for row in rows if keep(row))
    (out / "metrics.csv").write_text(text.getvalue())
    return out


def batch_higher_by_seed(row):
    if row["norm"] == "batch" and row["test_acc"] != "nan":
        row["test_acc"] = number(float(row["test_acc"]) + 0.01 * int(row["seed"]))
    return row


def fewer_scales_other_decay(config):
    config["sweep"]["init_scales"] = [s for s in config["sweep"]["init_scales"] if s != LEFT_OUT]
    config["train"]["weight_decay"] = 0.001
    return config


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    two_seeds = sweep(
        root,
        "two_seeds",
        keep=lambda row: row["seed"] in ("0", "1"),
        config=lambda c: {**c, "sweep": {**c["sweep"], "seeds": [0, 1]}},
    )
    shifted = sweep(
        root,
        "shifted",
        keep=lambda row: float(row["init_scale"]) != LEFT_OUT,
        change=batch_higher_by_seed,
        config=fewer_scales_other_decay,
    )
    return INIT_SCALE, two_seeds, shifted


def summary_rows(directory) -> dict[tuple, tuple[str, str]]:
    """summary.md's every-configuration table of `directory`, drawn now: key cells -> (test acc, diverged)."""
    lines = summary_markdown(read_metrics(directory), read_config(directory)).split("## Every configuration")[1]
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines.strip().splitlines()]
    header, body = table[0], table[2:]
    return {tuple(row[:6]): (row[header.index("test acc")], row[-1]) for row in body}


def test_compare_of_three_sweeps_prints_summary_mds_statistics_in_120_columns_and_writes_the_csv(
    sweeps, tmp_path, capsys
):
    before = snapshot(INIT_SCALE)
    assert main(["compare", *map(str, sweeps), "--csv", str(tmp_path / "table.csv")]) == 0
    out, err = capsys.readouterr()
    assert max(map(len, out.splitlines())) <= 120
    assert "2 configurations that only some directories ran are left out (--all shows them)" in out
    assert err == "normbench: warning: the directories' configs differ in train.weight_decay (A: 0.0, B: 0.0, " \
                  "C: 0.001), which no column shows: every row compares these differences too\n"  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert len(rows) == 3 * 30 and {row["directory"] for row in rows} == {"A", "B", "C"}
    assert all(float(row["init_scale"]) != LEFT_OUT for row in rows)
    for label, directory in zip("ABC", sweeps):
        summary = summary_rows(directory)
        for row in (row for row in rows if row["directory"] == label):
            key = (row["model"], row["norm"], row["protocol"], row["norm_batch"], f"{float(row['init_scale']):g}",
                   f"{float(row['learning_rate']):g}")  # fmt: skip
            mean, ci = float(row["mean"] or "nan"), float(row["ci95"] or "nan")
            shown = "-" if np.isnan(mean) else f"{mean:.1f}" if np.isnan(ci) else f"{mean:.1f} ± {ci:.1f}"
            assert (shown, f"{row['diverged']}/{row['runs']}") == summary[key], (label, key)
    diverged = [row for row in rows if row["norm"] == "none" and float(row["init_scale"]) == 1]
    assert [(r["directory"], r["diverged"], r["runs"], r["mean"]) for r in diverged] == [
        ("A", "3", "3", ""), ("B", "2", "2", ""), ("C", "3", "3", "")
    ]  # fmt: skip
    assert snapshot(INIT_SCALE) == before


def read(sweeps):
    with pytest.warns(ResultsWarning, match="configs differ in train.weight_decay"):
        return read_sweeps(sweeps)


def test_paired_differences_leave_out_diverged_runs(sweeps):
    table = compare(read(sweeps)).table
    b, c = table[table.directory == "B"], table[table.directory == "C"]
    assert (b["diff"].dropna() == 0).all() and not b.significant.any()
    batch = c[c.norm == "batch"]
    # differences of 0, 1 and 2 points: mean 1, half-width t(0.975, 2 dof) x 1 / sqrt(3), which holds 0
    np.testing.assert_allclose(batch["diff"], 1.0, atol=1e-4)
    np.testing.assert_allclose(batch.diff_ci95, 4.302653 / np.sqrt(3), atol=1e-4)
    assert (batch.paired_seeds == 3).all() and not batch.significant.any()
    scales = c.init_scale.astype(float)
    none_at_1, none_at_054 = (c[(c.norm == "none") & np.isclose(scales, s)].iloc[0] for s in (1.0, 0.54117))
    assert none_at_1.paired_seeds == 0 and np.isnan(none_at_1["diff"])
    assert none_at_054.paired_seeds == 1 and none_at_054["diff"] == 0  # the one seed that converged in both


def test_all_compares_every_configuration_any_sweep_ran(sweeps):
    table = compare(read(sweeps), every=True).table
    left_out = table[table.init_scale.astype(float) == LEFT_OUT]
    assert len(table) == 3 * 30 + 2 * 2 and sorted(left_out.directory) == ["A", "A", "B", "B"]


def test_a_directory_compared_with_itself_is_compared_and_said(capsys):
    assert main(["compare", str(INIT_SCALE), str(INIT_SCALE)]) == 0
    out, err = capsys.readouterr()
    assert err == f"normbench: warning: A and B are the same directory, '{INIT_SCALE}': their difference is 0 by " \
                  "construction\n"  # fmt: skip
    assert out.count("0.0 ± 0.0") == 30 and "3 seeds" in out  # every configuration with a seed that converged


def test_directories_with_one_configuration_in_common_compare_it(tmp_path, capsys):
    """With no key varying between the rows (one configuration in common, or one directory twice), compare ended
    in a ValueError traceback from pandas: every key is said once above the table instead."""
    one = sweep(
        tmp_path,
        "one",
        keep=lambda row: row["norm"] == "batch" and float(row["init_scale"]) == 1.0,
        config=lambda c: {**c, "sweep": {**c["sweep"], "norms": ["batch"], "init_scales": [1.0]}},
    )
    for dirs in ([INIT_SCALE, one], [one, one]):
        assert main(["compare", *map(str, dirs)]) == 0
        out = capsys.readouterr().out
        assert "in every row: model=mlp, norm=batch, protocol=sgd, norm_batch=100, init_scale=1, " in out
        rows = [line.split() for line in out.splitlines()[-2:]]
        assert rows == [
            ["A", "27.3", "±", "7.9", "0/3"],
            ["B", "27.3", "±", "7.9", "0/3", *"0.0 ± 0.0 3 seeds".split()],
        ]


def test_the_compare_command_draws_the_figure(sweeps, tmp_path):
    assert main(["compare", *map(str, sweeps), "--plot", str(tmp_path / "compare.png")]) == 0
    assert (tmp_path / "compare.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing"], "'{tmp}/missing' not found: is it a results directory?"),
        (["{tmp}/not_results"], "'{tmp}/not_results/config.json' not found: is '{tmp}/not_results' a results"),
        (["{init}", "--plot", "{tmp}/figure.xyz"], "--plot '{tmp}/figure.xyz': the file name must end in .png, .pdf"),
        (["{init}", "--csv", "{tmp}/no/such/dir/table.csv"], "cannot write '{tmp}/no/such/dir/table.csv'"),
        (["{init}", "--metric", "val_acc"], "unknown metric 'val_acc'; compare takes test_acc, "),
    ],
)
def test_compare_says_what_is_wrong_in_one_line(tmp_path, capsys, args, message):
    """Each after `normbench compare results/init_scale`."""
    (tmp_path / "not_results").mkdir()
    assert main(["compare", str(INIT_SCALE), *(a.format(tmp=tmp_path, init=INIT_SCALE) for a in args)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("normbench: error: ") and message.format(tmp=tmp_path) in err[0], err


@pytest.mark.parametrize("flag, name", [("--csv", "table.csv"), ("--plot", "compare.png")])
def test_compare_into_a_full_disk_is_the_machines_error_exit_1(tmp_path, capsys, monkeypatch, flag, name):
    """A write the machine refuses (here ENOSPC, as a read-only file system's EROFS would be) is not the user's
    input to correct: exit 1, where a path through a missing directory (above) exits 2."""
    import errno

    from normbench.reports import compare

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compare, "atomic_write", disk_full)
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", disk_full)
    assert main(["compare", str(INIT_SCALE), str(INIT_SCALE), flag, str(tmp_path / name)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"normbench: error: cannot write '{tmp_path / name}': No space left on device"], err
    assert not (tmp_path / name).exists()


def test_compare_needs_two_directories(capsys):
    assert main(["compare", str(INIT_SCALE)]) == 2
    assert "at least two" in capsys.readouterr().err
