"""Rerunning a study whose results are finished trains nothing and says so, unless --force."""

import shutil

import pytest
from conftest import snapshot

from normbench.cli import main
from normbench.study import is_finished


def test_a_rerun_of_a_finished_study_says_so_and_changes_nothing(study, capsys):
    config, out = study
    before = snapshot(out)
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{out}/ already holds the finished results of this config: nothing to train" in captured.out
    assert "training" not in captured.err and "estimate" not in captured.err
    assert snapshot(out) == before  # config.json's timings included: nothing was written


def test_an_interrupted_or_other_configs_directory_is_not_finished(study, tmp_path):
    from normbench.config import load_config, set_fields

    config, out = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    loaded = load_config(config)
    assert is_finished(copy, loaded)
    assert not is_finished(copy, set_fields(loaded, {"train.epochs": 3}))
    (copy / "unfinished").mkdir()  # a --force run of it, interrupted
    assert not is_finished(copy, loaded)
    assert not is_finished(tmp_path / "nothing", loaded)


@pytest.mark.slow
def test_force_trains_a_finished_study_again(study, tmp_path, capsys):
    config, out = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = (copy / "config.json").read_bytes()
    assert main(["run", str(config), "--out", str(copy), "--force", "--quiet"]) == 0
    assert "already holds" not in capsys.readouterr().out
    assert (copy / "config.json").read_bytes() != before  # written again, with this run's timings
    assert (copy / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()
