"""Readers of a results directory (`normbench.results.reader`): the manifest that says which file changed since
the run, and a plot that a `--force` swap cannot mix."""

import csv
import hashlib
import io
import json
import shutil
import threading
import time
import warnings

import pytest
from conftest import snapshot

import normbench
from normbench.cli import main
from normbench.errors import UserError
from normbench.reports.plots import draw_figures
from normbench.results.manifest import sign
from normbench.results.reader import ResultsWarning
from normbench.results.store import exclusive, number, replace
from normbench.results.swap import start
from normbench.study import OWNED

READERS = ("plot", "report", "compare", "load")


def signed_copy(study, tmp_path):
    return shutil.copytree(study[1], tmp_path / "results")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_signs_every_file_it_wrote(study):
    _, out = study
    signed = json.loads((out / "manifest.json").read_text())["sha256"]
    # The session's study may also hold figures that another test's `plot --format` drew and signed.
    assert {"config.json", "metrics.csv", "init_scale.png", "summary.md"} <= set(signed)
    assert {name.rpartition(".")[0] for name in signed} <= {"config", "metrics", "init_scale", "summary"}
    assert signed == {name: sha256(out / name) for name in signed}


def read(reader, directory, capsys, *flags, other=None) -> tuple[int, list[str]]:
    """Exit status and the lines on stderr of `reader` (`load` as normbench.load, its warnings as the CLI's;
    `compare` against `other`)."""
    capsys.readouterr()
    if reader == "load":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResultsWarning)
            try:
                normbench.load(directory, trust_edits="--trust-edits" in flags)
            except UserError as e:
                return 2, [f"normbench: error: {e}"]
        return 0, [f"normbench: warning: {w.message}" for w in caught if w.category is ResultsWarning]
    code = main([reader, str(directory), *([str(other)] if reader == "compare" else []), *flags])
    return code, capsys.readouterr().err.splitlines()


def change_a_value(directory):
    """One train loss 0.01 higher: a table as valid as before."""
    path = directory / "metrics.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    column = rows[0].index("train_loss")
    rows[1][column] = number(float(rows[1][column]) + 0.01)
    path.write_text(table_text(rows))


def table_text(rows) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def change_the_command(directory):
    saved = json.loads((directory / "config.json").read_text())
    saved["environment"]["command"] = ["normbench", "run", "something else"]
    (directory / "config.json").write_text(json.dumps(saved, indent=2) + "\n")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("edit", [change_a_value, change_the_command])
def test_data_edited_since_the_run_is_refused_in_one_line_unless_trusted(study, tmp_path, capsys, edit, reader):
    out = signed_copy(study, tmp_path)
    edit(out)
    name = "metrics.csv" if edit is change_a_value else "config.json"
    before = snapshot(out)
    code, err = read(reader, out, capsys, other=study[1])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"normbench: error: '{out / name}' changed since the run wrote it"), err
    assert "--trust-edits" in err[0] and snapshot(out) == before
    code, err = read(reader, out, capsys, "--trust-edits", other=study[1])
    assert (
        code == 0 and f"normbench: warning: '{out / name}' changed since the run wrote it; read anyway (trusted)" in err
    )
    assert (out / name).read_bytes() == before[name]
    assert json.loads((out / "manifest.json").read_text())["sha256"][name] != sha256(out / name), "still flagged"


def test_a_changed_drawing_is_a_warning_and_plot_signs_what_it_redraws(study, tmp_path, capsys):
    out = signed_copy(study, tmp_path)
    (out / "summary.md").write_text("my own summary\n")
    code, err = read("report", out, capsys)
    assert code == 0 and err == [f"normbench: warning: '{out / 'summary.md'}' changed since normbench drew it "
                                 "(manifest.json); `normbench plot` draws it again from the data"]  # fmt: skip
    assert read("plot", out, capsys)[0] == 0
    assert (out / "summary.md").read_bytes() == (study[1] / "summary.md").read_bytes()
    assert read("report", out, capsys) == (0, [])
    assert read("plot", out, capsys, "--format", "svg") == (0, [])
    signed = json.loads((out / "manifest.json").read_text())["sha256"]
    assert signed == {name: sha256(out / name) for name in signed} and "init_scale.svg" in signed


def test_results_without_a_manifest_are_read_unchecked_and_stay_unsigned(study, tmp_path, capsys):
    out = signed_copy(study, tmp_path)
    (out / "manifest.json").unlink()
    change_a_value(out)
    data = {name: (out / name).read_bytes() for name in ("config.json", "metrics.csv")}
    for reader in READERS:
        assert read(reader, out, capsys, other=study[1]) == (0, []), reader
    assert not (out / "manifest.json").exists()
    assert {name: (out / name).read_bytes() for name in data} == data  # plot and report redraw only their drawings


def other_results(old, directory):
    """The results in `old` with every train accuracy halved: drawn and signed as a run would."""
    shutil.copytree(old, directory)
    rows = list(csv.reader(io.StringIO((directory / "metrics.csv").read_text())))
    column = rows[0].index("train_acc")
    for row in rows[1:]:
        row[column] = number(float(row[column]) / 2)
    (directory / "metrics.csv").write_text(table_text(rows))
    (directory / "manifest.json").unlink()
    drawn = draw_figures(directory)
    sign(directory, ["metrics.csv", "config.json", *(path.name for path in drawn)])
    return directory


def test_a_plot_racing_a_force_swap_never_mixes_old_and_new_files(study, tmp_path):
    """10 plots of the old results, each with the swap to new ones falling at another moment of it, from before
    it reads to after it writes: each leaves the new results whole, as a run wrote them (a plot that comes after
    the swap draws the same bytes from them)."""
    old = signed_copy(study, tmp_path)
    new = other_results(old, tmp_path / "new")
    expected = snapshot(new)
    assert expected["summary.md"] != snapshot(old)["summary.md"]
    warm = shutil.copytree(old, tmp_path / "warm")
    began = time.perf_counter()
    assert main(["plot", str(warm)]) == 0
    plot_s = time.perf_counter() - began
    for attempt in range(10):
        out = shutil.copytree(old, tmp_path / f"out{attempt}")
        both = threading.Barrier(2)
        swapping = threading.Thread(target=swap_in, args=(out, expected, both, plot_s * attempt / 9))
        swapping.start()
        both.wait()
        code = main(["plot", str(out)])  # in the main thread, where the CLI takes its signals
        swapping.join()
        assert code == 0 and snapshot(out) == expected, attempt


def swap_in(out, files, both, delay):
    """As a --force run swaps its results in: holding the directory's lock, build `files` beside it, wait for the
    plot to start (`both`), then swap them in `delay` seconds later."""
    with exclusive(out) as lock:
        replacement = start(out)
        for name, data in files.items():
            (replacement / name).write_bytes(data)
        both.wait()
        time.sleep(delay)
        replace(out, replacement, OWNED, lock)


def test_a_rerun_finds_results_finished_only_where_every_reader_would_read_them(study, tmp_path):
    from normbench.config import load_config
    from normbench.study import is_finished

    config = load_config(study[0])
    out = signed_copy(study, tmp_path)
    (out / "summary.md").write_text("my own summary\n")
    assert is_finished(out, config), "a drawing redrawn or edited leaves the runs as they were"
    change_a_value(out)
    assert not is_finished(out, config), "an edited table is not the run's: the rerun replaces it"
    (out / "manifest.json").unlink()
    (out / "metrics.csv").write_bytes((out / "metrics.csv").read_bytes()[:-30])
    assert not is_finished(out, config), "nor is a damaged one"
