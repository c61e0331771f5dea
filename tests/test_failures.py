"""Failures that are not bad input: the machine's (exit 1) and damaged results (exit 2), each one line."""

import errno
import shutil

from conftest import snapshot

from normbench import study as study_module
from normbench.cli import main


def test_a_write_failing_after_training_is_one_line_exit_1_and_keeps_the_results(study, tmp_path, capsys, monkeypatch):
    config, out = study
    out = shutil.copytree(out, tmp_path / "results")  # the shared study's directory stays without unfinished/
    before = snapshot(out)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(study_module, "draw_figures", disk_full)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err  # after the progress lines of training
    assert [line for line in err.splitlines() if not line[:2].isdigit()] == [err.splitlines()[-1]], err
    assert err.splitlines()[-1].startswith("normbench: error: cannot write the results to"), err
    assert "No space left on device" in err
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("unfinished/")} == before


def test_plot_of_a_truncated_metrics_table_is_one_line_exit_2(study, tmp_path, capsys):
    _, out = study
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    text = (damaged / "metrics.csv").read_text()
    (damaged / "metrics.csv").write_text(text[: len(text) - 20])
    capsys.readouterr()
    assert main(["plot", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: ") and err.count("\n") == 1, err
    assert "fields: the file is truncated or damaged" in err


def test_a_cell_that_cannot_be_kept_mid_sweep_is_one_line_exit_1(study, tmp_path, capsys, monkeypatch):
    from normbench.results import resume

    config, _ = study

    write = resume.atomic_write

    def disk_full_for_cells(path, *args, **kwargs):  # the disk fills after the run has begun
        if path.parent.name == "cells":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, *args, **kwargs)

    monkeypatch.setattr(resume, "atomic_write", disk_full_for_cells)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("normbench: error: cannot keep a finished cell in"), err
    assert "No space left on device" in err.splitlines()[-1]
