"""The real CLI on a tiny study into a temp dir, and every bad input: one line, exit 2, old results intact."""

import csv
import json
import os
import subprocess
import sys

import pytest

from normbench.cli import main
from normbench.norms import NORMS
from normbench.results import COLUMNS

VALID = ", ".join(NORMS)  # the error lists every registered norm

TINY = """
from normbench.config import Config, DataConfig, ModelConfig, SweepConfig, TrainConfig


def get_config():
    return Config(
        name="tiny",
        data=DataConfig(source="mnist5k", n_train=64, n_test=32),
        model=ModelConfig(hidden=(8, 8)),
        train=TrainConfig(epochs=2, eval_batch_size=16),
        sweep=SweepConfig(norms=("batch", "none"), batch_sizes=(16,), init_scales=(1.0, 0.1), seeds=(0, 1)),
        figures=("init_scale",),
    )
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny config and the results of running it once through the CLI."""
    root = tmp_path_factory.mktemp("study")
    config = root / "tiny.py"
    config.write_text(TINY)
    out = root / "results"
    assert main(["run", str(config), "--out", str(out)]) == 0
    return config, out


def test_run_writes_config_table_and_figure(study):
    _, out = study
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    # norms x init scales x seeds x epochs
    assert len(rows) == 2 * 2 * 2 * 2
    assert {(r["norm"], r["init_scale"], r["seed"], r["epoch"]) for r in rows} == {
        (n, s, seed, e) for n in ("batch", "none") for s in ("1.0", "0.1") for seed in "01" for e in "12"
    }
    assert all(0 <= float(r["train_acc"]) <= 1 and r["diverged"] == "0" for r in rows)
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["sweep"]["seeds"] == [0, 1]
    assert {"jax", "flax", "device", "git_revision", "timings"} <= set(saved["environment"]) | set(saved)
    assert (out / "init_scale.png").stat().st_size > 10_000


def test_plot_redraws_from_the_table_alone(study):
    _, out = study
    (out / "init_scale.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "init_scale.png").stat().st_size > 10_000


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "sweep.norms=batch,weird"], f"unknown norm 'weird'; valid norms: {VALID}"),
        (["--set", "sweep.norms=group", "--set", "norm.num_groups=3"], "3 groups do not divide a layer of 8"),
        (["--set", "data.source=idx:/no/such/dir"], "/no/such/dir"),
        (["--set", "sweep.batch_sizes=100"], "batch size 100 is larger than the 64 training examples"),
        (["--set", "train.epochz=3"], "unknown config key 'train.epochz'"),
        (["--set", "train.epochs=many"], "'train.epochs' expects an integer, got 'many'"),
        (["--set", "train.epochs"], "--set expects key=value"),
        (["--set", "data.source=cifar"], "unknown data source"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_results_alone(study, capsys, args, message):
    config, out = study
    before = snapshot(out)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("normbench: error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert snapshot(out) == before


def test_malformed_config_file_and_missing_results_dir(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "syntax error at line 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "not found: is" in capsys.readouterr().err


def test_unwritable_output_dir(study, tmp_path, capsys):
    config, _ = study
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["run", str(config), "--out", str(blocker / "sub")]) == 2
    assert "cannot write results to" in capsys.readouterr().err


def test_console_script_help_is_fast_and_imports_no_jax():
    result = subprocess.run(["normbench", "--help"], capture_output=True, text=True, check=True)
    assert "run" in result.stdout and "plot" in result.stdout
    code = "import sys; from normbench.cli import parser; parser(); print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_console_script_exit_status_on_bad_input(study):
    config, out = study
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        ["normbench", "run", str(config), "--out", str(out), "--set", "sweep.norms=batch,weird"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"normbench: error: unknown norm 'weird'; valid norms: {VALID}"]


def test_list_shows_every_norm_with_its_metadata_and_every_config(capsys):
    from normbench.norms import NORMS

    assert main(["list", "norms"]) == 0
    out = capsys.readouterr().out
    for name, spec in NORMS.items():
        (line,) = [row for row in out.splitlines() if row.split()[0] == name]
        assert spec.summary in line and spec.reduces_over in line
    assert main(["list", "configs"]) == 0
    out = capsys.readouterr().out
    assert "configs/init_scale.py" in out and "configs/small_batch.py" in out
    assert main(["list", "models"]) == 0
    assert "resnet20" in capsys.readouterr().out


def test_small_batch_figures_with_a_norm_that_has_no_ghost_form(study, tmp_path):
    config, _ = study
    out = tmp_path / "figures"
    args = ["--set", "sweep.norms=batch,batch_renorm,layer", "--set", "sweep.protocols=sgd,ghost",
            "--set", "sweep.batch_sizes=8,16", "--set", "sweep.init_scales=1.0",
            "--set", "figures=error_vs_batch,bn_eval_modes"]  # fmt: skip
    assert main(["run", str(config), "--out", str(out), *args]) == 0
    for name in ("error_vs_batch.png", "bn_eval_modes.png", "summary.md"):
        assert (out / name).stat().st_size > 1000
    summary = (out / "summary.md").read_text()
    assert "| mlp | ghost | batch | 1 |" in summary and "| mlp | sgd | batch_renorm | 1 |" in summary


def test_results_of_another_config_are_kept_unless_forced(study, tmp_path, capsys):
    config, out = study
    other = tmp_path / "other"
    assert main(["run", str(config), "--out", str(other)]) == 0
    before = snapshot(other)
    args = ["run", str(config), "--out", str(other), "--set", "train.epochs=1", "--set", "sweep.seeds=0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds results of a different config (differs in sweep.seeds, train.epochs)" in err
    assert snapshot(other) == before
    assert main([*args, "--force"]) == 0
    assert json.loads((other / "config.json").read_text())["config"]["train"]["epochs"] == 1


def test_a_second_run_into_a_busy_directory_stops(study, capsys):
    import fcntl

    config, out = study
    before = snapshot(out)
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["run", str(config), "--out", str(out)]) == 2
    assert "another normbench run is writing to" in capsys.readouterr().err
    assert snapshot(out) == before
