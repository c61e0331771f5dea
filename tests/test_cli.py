"""The real CLI on a tiny study into a temp dir (bad inputs: tests/test_bad_inputs.py)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import snapshot

from normbench.cli import main
from normbench.config import Config
from normbench.core.axes import run_columns
from normbench.errors import UserError
from normbench.norms import NORMS
from normbench.results.store import METRIC_COLUMNS

VALID = ", ".join(NORMS)  # the error lists every registered norm
ROOT = Path(__file__).resolve().parent.parent


def test_run_writes_config_table_and_figure(study):
    _, out = study
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == run_columns(Config()) + METRIC_COLUMNS
    # norms x init scales x seeds x epochs
    assert len(rows) == 2 * 2 * 2 * 2
    assert {(r["norm"], r["init_scale"], r["seed"], r["epoch"]) for r in rows} == {
        (n, s, seed, e) for n in ("batch", "none") for s in ("1.0", "0.1") for seed in "01" for e in "12"
    }
    assert all(0 <= float(r["train_acc"]) <= 1 and r["diverged"] == "0" for r in rows)
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["sweep"]["seeds"] == [0, 1]
    assert {"jax", "flax", "device", "cpu", "git_revision", "timings"} <= set(saved["environment"]) | set(saved)
    assert (out / "init_scale.png").stat().st_size > 10_000
    assert not (out / ".lock").exists()  # the run's lock goes with it
    assert sorted(p.name for p in out.parent.parent.iterdir()) == ["runs", "tiny.py"]  # nothing outside runs/


def test_the_environment_names_the_cpu_and_its_widest_vector_extension(tmp_path):
    """What makes the last digits of a CPU's results (XLA compiles for the host's instructions)."""
    from normbench.study import cpu

    info = tmp_path / "cpuinfo"
    processor = "processor\t: {}\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 {}\n\n"
    info.write_text(processor.format(0, "avx512f avx512bw") * 2)
    assert cpu(info) == "Some CPU 9000, avx512f"
    info.write_text(processor.format(0, "fma"))
    assert cpu(info) == "Some CPU 9000, avx2"
    info.write_text("processor\t: 0\nmodel name\t: An ARM core\nFeatures\t: fp asimd\n")
    assert cpu(info) == "An ARM core"
    assert cpu(tmp_path / "absent")  # no /proc: what platform knows


def test_plot_redraws_from_the_table_alone(study):
    _, out = study
    (out / "init_scale.png").unlink()
    assert main(["plot", str(out)]) == 0
    small = (out / "init_scale.png").stat().st_size
    assert small > 10_000
    assert main(["plot", str(out), "--dpi", "220"]) == 0
    assert (out / "init_scale.png").stat().st_size > 2 * small
    for format, magic in (("pdf", b"%PDF"), ("svg", b"<?xml")):
        assert main(["plot", str(out), "--format", format]) == 0
        assert (out / f"init_scale.{format}").read_bytes().startswith(magic)


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
    words = " ".join(out.split())  # as read, whatever the wrapping
    for name, spec in NORMS.items():
        (line,) = [row for row in out.splitlines() if row.split()[0] == name]
        flags = (spec.batch_dependent, spec.running_stats, spec.fuses_activation, spec.scale_invariant)
        assert line.split()[1:5] == ["yes" if flag else "no" for flag in flags]
        assert " ".join(spec.reduces_over.split()) in words
        assert f"{spec.summary}; options: {', '.join(spec.options) or 'none'}" in words
    assert main(["list", "configs"]) == 0
    out = capsys.readouterr().out
    assert "configs/init_scale.py" in out and "configs/small_batch.py" in out
    assert main(["list", "models"]) == 0
    assert "resnet20" in capsys.readouterr().out


@pytest.mark.parametrize("what", ["norms", "models", "protocols", "datasets", "configs"])
def test_list_fits_100_columns(what, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # where configs/ is
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100 and len(out.splitlines()) > 2


@pytest.mark.slow
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


@pytest.mark.slow
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
    (out / ".lock").unlink()  # this test's, not the refused run's
    assert snapshot(out) == before


def test_a_lock_counts_only_while_its_file_is_the_one_at_the_path(tmp_path, monkeypatch):
    # The holder finishes, removing its .lock, between this run's open and its flock: the file it locked is gone,
    # so it locks the new file at the path instead, where the next run sees it.
    import fcntl

    from normbench.results import store

    flock = fcntl.flock
    raced = []

    def holder_finishes_first(handle, operation):
        if not raced:
            raced.append(True)
            (tmp_path / ".lock").unlink()
        flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", holder_finishes_first)
    with store.exclusive(tmp_path):
        assert raced and (tmp_path / ".lock").exists()
        with pytest.raises(UserError, match="another normbench run is writing to"), store.exclusive(tmp_path):
            pass
        assert (tmp_path / ".lock").exists()  # the refused run leaves the holder's lock alone
    assert list(tmp_path.iterdir()) == []


def test_list_datasets_shows_every_source_and_the_tfds_sets_prepared_offline(tmp_path, monkeypatch, capsys):
    (tmp_path / "fashion_mnist" / "3.0.1").mkdir(parents=True)
    (tmp_path / "fashion_mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
    (tmp_path / "downloads" / "extracted").mkdir(parents=True)  # TFDS's download cache is not a data set
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert main(["list", "datasets"]) == 0
    sources = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:] if not line.startswith(" ")]
    assert sources == ["mnist5k", "idx:<dir>", "tfds:<name>", "npz:<file>", "tfds:fashion_mnist"]


def test_show_prints_the_resolved_config_in_a_form_that_set_reads_back(capsys):
    from normbench.config import Config, apply_overrides, load_config

    config_file = str(ROOT / "configs" / "small_batch.py")
    overrides = ["train.epochs=3", "sweep.norms=batch,group", "sweep.protocols=sgd,ghost"]
    assert main(["show", config_file, *(a for o in overrides for a in ("--set", o))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train.epochs                  = 3  # default: 20" in lines
    assert "sweep.norms                   = batch,group  # default: batch,none" in lines
    # sgd: batch and group at 4 batches; ghost: batch's 4 group sizes vmapped in one cell, group's one size in
    # another; 5 seeds x 4 learning rates each
    assert "# 10 cells (one compiled program each), 260 runs of 3 epochs" in lines
    cost = lines[lines.index("# 10 cells (one compiled program each), 260 runs of 3 epochs") + 1]
    assert cost.startswith("# about ") and " run-steps, " in cost and " of training at " in cost
    assert lines[-1].startswith("# report.tune_extensions=2: ") and "at worst 260 more runs" in lines[-1]
    # the learning rates as the runs use them: r x SGD batch / 256 (the config's learning_rates = 0.8,...,6.4)
    assert "#   sgd batch=2: learning_rate=0.00625,0.0125,0.025,0.05 ghost_size=2" in lines
    assert "#   ghost batch=128 (batch): learning_rate=0.4,0.8,1.6,3.2 ghost_size=2,8,32,128" in lines
    assert "#   ghost batch=128 (group): learning_rate=0.4,0.8,1.6,3.2 ghost_size=128" in lines
    settings = [line.split("  # ")[0] for line in lines if not line.startswith("#")]
    assert apply_overrides(Config(), settings) == apply_overrides(load_config(config_file), overrides)
    axes = [line.split()[1:3] for line in lines if line.startswith("#   ")]
    assert axes[:2] == [["model", "static"], ["norm", "static"]] and ["seed", "value"] in axes


def test_show_checks_the_config_like_run(capsys):
    assert main(["show", str(ROOT / "configs" / "init_scale.py"), "--set", "sweep.norms=weird"]) == 2
    assert "unknown norm 'weird'" in capsys.readouterr().err


def test_run_quiet_logs_one_plain_line_per_event_and_writes_tensorboard_runs(study, tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    config, _ = study
    tb = tmp_path / "tb"
    args = ["--set", "sweep.norms=batch", "--quiet", "--tensorboard", str(tb)]
    assert main(["run", str(config), "--out", str(tmp_path / "out"), *args]) == 0
    # 4 runs x 2 epochs x 4 steps (64 examples in batches of 16)
    estimate, *messages = [line[len("hh:mm:ss ") :] for line in capsys.readouterr().err.splitlines()]
    assert estimate.startswith("estimate: about ")
    assert " MiB for the largest cell training at once; 32 run-steps, " in estimate and " of training at " in estimate
    assert messages[:4] == [
        "sweep tiny: 1 cell, 4 runs of 2 epochs",
        "cell 1/1 mlp batch sgd batch=16: compiling",
        "cell 1/1 mlp batch sgd batch=16: training 4 runs",
        "cell 1/1 mlp batch sgd batch=16: 1/2 epochs done",  # a line a quarter of the way, the last one at the end
    ]
    assert messages[4].startswith("cell 1/1 mlp batch sgd batch=16: 4 runs, compile ")
    assert "; its best: test acc " in messages[4] and len(messages) == 5
    runs = sorted(str(p.parent.relative_to(tb)) for p in tb.glob("**/events.out.tfevents.*"))
    assert runs == [f"mlp_batch_sgd_b16/init{s}_lr0.01/seed{seed}" for s in ("0.1", "1") for seed in (0, 1)]


def test_the_recorded_revision_is_dirty_for_changed_code_but_not_for_changed_results(tmp_path):
    from normbench.study import git_revision

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.csv").write_text("a\n")
    (tmp_path / "train.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    head = git_revision(tmp_path)
    assert head is not None and not head.endswith("-dirty")
    (tmp_path / "results" / "metrics.csv").write_text("b\n")
    assert git_revision(tmp_path) == head
    (tmp_path / "train.py").write_text("x = 2\n")
    assert git_revision(tmp_path) == head + "-dirty"


@pytest.mark.slow
def test_a_norm_option_no_swept_norm_reads_is_a_warning(capsys):
    config = str(ROOT / "configs" / "init_scale.py")
    assert main(["show", config]) == 0
    assert "warning" not in capsys.readouterr().err  # the config's own num_groups waits for GroupNorm
    assert main(["show", config, "--set", "norm.ghost_size=4", "--set", "norm.epsilon=1e-5"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "normbench: warning: norm.ghost_size is read by none of the norms swept (batch, none): it changes nothing"
    ]
    assert main(["show", config, "--sweep", "norm.num_groups=2,4"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "normbench: warning: norm.num_groups is read by none of the norms swept (batch, none): "
        "its values train the same runs again"
    ]
    assert main(["show", config, "--set", "sweep.norms=group", "--sweep", "norm.num_groups=2,4"]) == 0
    assert "warning" not in capsys.readouterr().err
