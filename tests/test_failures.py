"""Failures that are not bad input: the machine's (exit 1) and damaged results (exit 2), each one line; and what
was silent. Each case of issue 29's "Why" is a row here or, where it is bad input, in test_bad_inputs.py."""

import contextlib
import csv
import errno
import io
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
from conftest import snapshot, study_text
from sandbox import Sandbox

import normbench
from normbench import study as study_module
from normbench.cli import main
from normbench.core import budget
from normbench.errors import UserError
from normbench.reports import plots
from normbench.results.store import exclusive, replace
from normbench.results.swap import start
from normbench.runtime import calibration
from normbench.study import OWNED


def test_a_write_failing_after_training_is_one_line_exit_1_and_keeps_the_results(study, tmp_path, capsys, monkeypatch):
    config, out = study
    out = shutil.copytree(out, tmp_path / "results")  # the shared study's directory stays without unfinished/
    before = snapshot(out)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(study_module, "draw_figures", disk_full)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--force"]) == 1  # --force: the results are finished
    err = capsys.readouterr().err  # after the progress lines of training
    assert [line for line in err.splitlines() if not line[:2].isdigit()] == [err.splitlines()[-1]], err
    assert err.splitlines()[-1].startswith("normbench: error: cannot write the results to"), err
    assert "No space left on device" in err
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("unfinished/")} == before


def test_a_full_disk_as_a_run_claims_its_directory_is_one_line_exit_1(study, tmp_path, capsys, monkeypatch):
    """The run's first write, `unfinished/config.json`, on a full disk was an OSError traceback. The run replaces
    earlier results (--force), which stay as they were."""
    from normbench.results import resume

    config, out = study
    out = shutil.copytree(out, tmp_path / "results")
    before = snapshot(out)
    write = resume.atomic_write

    def disk_full_for_the_claim(path, *args, **kwargs):
        if path.name == "config.json" and path.parent.name == "unfinished":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, *args, **kwargs)

    monkeypatch.setattr(resume, "atomic_write", disk_full_for_the_claim)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: cannot start the run in ") and err.count("\n") == 1, err
    assert "No space left on device; make room and run it again" in err
    assert snapshot(out) == before
    assert not (out / "unfinished").exists(), "an empty unfinished/ reads as a run under way: the results unfinished"


def test_plot_of_a_truncated_metrics_table_is_one_line_exit_2(study, tmp_path, capsys):
    _, out = study
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "manifest.json").unlink(missing_ok=True)  # as results written before normbench signed them
    text = (damaged / "metrics.csv").read_text()
    (damaged / "metrics.csv").write_text(text[: len(text) - 20])
    before = snapshot(damaged)
    capsys.readouterr()
    assert main(["plot", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: ") and err.count("\n") == 1, err
    assert "ends mid-line (line 17 has no line end): the file is truncated or damaged" in err
    assert snapshot(damaged) == before


def test_a_cell_that_cannot_be_kept_mid_sweep_is_one_line_exit_1(study, tmp_path, capsys, monkeypatch):
    """The run replaces earlier results (--force), which stay as they were beside its unfinished/."""
    from normbench.results import resume

    config, out = study
    out = shutil.copytree(out, tmp_path / "results")
    before = snapshot(out)

    write = resume.atomic_write

    def disk_full_for_cells(path, *args, **kwargs):  # the disk fills after the run has begun
        if path.parent.name == "cells":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, *args, **kwargs)

    monkeypatch.setattr(resume, "atomic_write", disk_full_for_cells)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--force"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("normbench: error: cannot keep a finished cell in"), err
    assert "No space left on device" in err.splitlines()[-1]
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("unfinished/")} == before


def cut_mid_row(d):
    text = (d / "metrics.csv").read_text()
    last = text.rindex("\n", 0, len(text) - 1) + 1  # where the last row starts
    (d / "metrics.csv").write_text(text[: last + (len(text) - last) // 2])


def cut_at_a_line_boundary(d):
    lines = (d / "metrics.csv").read_text().splitlines(keepends=True)
    (d / "metrics.csv").write_text("".join(lines[:-3]))


def a_row_cut_short(d):
    """The second row of metrics.csv cut after 5 fields, the rows after it whole."""
    lines = (d / "metrics.csv").read_text().splitlines(keepends=True)
    (d / "metrics.csv").write_text("".join([*lines[:2], ",".join(lines[2].split(",")[:5]) + "\n", *lines[3:]]))


def a_norm_registered_elsewhere(d):
    """The config's first norm renamed to one this process lacks: a user's own norm's results, read where its
    module is not imported."""
    saved = json.loads((d / "config.json").read_text())
    saved["config"]["sweep"]["norms"][0] = "scale"
    (d / "config.json").write_text(json.dumps(saved))


def without_column(name, column):
    def damage(d):
        rows = list(csv.reader((d / name).read_text().splitlines()))
        at = rows[0].index(column)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(row[:at] + row[at + 1 :] for row in rows)
        (d / name).write_text(out.getvalue())

    return damage


def a_directory(name):
    def damage(d):
        (d / name).unlink()
        (d / name).mkdir()

    return damage


def write(name, data: bytes):
    return lambda d: (d / name).write_bytes(data)


# Damaged results, as every reader meets them: what is done to a copy of the tiny study's results (without its
# manifest.json, as results written before normbench signed them) and what the one error line says.
DAMAGED = {
    "metrics.csv cut mid-row": (cut_mid_row, "metrics.csv' ends mid-line (line 17 has no line end): the file is"),
    "metrics.csv cut at a line boundary": (
        cut_at_a_line_boundary,
        "metrics.csv' holds 1 row of the run model=mlp norm=none",
    ),
    "metrics.csv a row cut short": (a_row_cut_short, "metrics.csv' line 3 has 5 fields where its header has "),
    "metrics.csv lacking a column": (
        without_column("metrics.csv", "test_acc"),
        "metrics.csv' lacks the column test_acc: it is damaged",
    ),
    "metrics.csv header only": (
        lambda d: write("metrics.csv", (d / "metrics.csv").read_bytes().split(b"\n")[0] + b"\n")(d),
        "metrics.csv' holds its header but no rows",
    ),
    "runs of a norm not registered here": (
        a_norm_registered_elsewhere,
        "metrics.csv' holds runs that this process cannot lay out: unknown norm 'scale'; valid norms: none, batch,",
    ),
    "metrics.csv empty": (write("metrics.csv", b""), "metrics.csv' is empty: the file is truncated or damaged"),
    "metrics.csv not UTF-8": (write("metrics.csv", b"model,\xff\xfe\n"), "metrics.csv' is not UTF-8 text (byte 6"),
    "metrics.csv a directory": (a_directory("metrics.csv"), "metrics.csv' is a directory, not the file normbench"),
    "config.json a directory": (a_directory("config.json"), "config.json' is a directory, not the file normbench"),
    "config.json empty": (write("config.json", b""), "config.json' is empty: the file is truncated or damaged"),
    "config.json not UTF-8": (write("config.json", b'{"config": "\xe9"}'), "config.json' is not UTF-8 text"),
    "config.json cut": (
        lambda d: write("config.json", (d / "config.json").read_bytes()[:100])(d),
        "config.json' is not JSON (",
    ),
}
READERS = ("plot", "report", "compare", "load")


@pytest.fixture(scope="module")
def unsigned(study, tmp_path_factory):
    """The tiny study's results without their manifest, as results written before normbench signed them."""
    out = shutil.copytree(study[1], tmp_path_factory.mktemp("unsigned") / "results")
    (out / "manifest.json").unlink(missing_ok=True)
    return out


def read_with(reader, directory, other) -> tuple[int, str]:
    """Exit status and stderr of `reader` on `directory` (compare: against `other`); `load` as the CLI would."""
    if reader == "load":
        try:
            normbench.load(directory)
        except UserError as e:
            return 2, f"normbench: error: {e}\n"
        return 0, ""
    args = [reader, str(directory)] + ([str(other)] if reader == "compare" else [])
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_results_are_one_line_exit_2_for_every_reader_and_stay_as_they_were(unsigned, tmp_path, case, reader):
    damage, message = DAMAGED[case]
    damaged = shutil.copytree(unsigned, tmp_path / "damaged")
    damage(damaged)
    before = snapshot(damaged), snapshot(unsigned)
    code, err = read_with(reader, damaged, unsigned)
    assert code == 2 and err.startswith("normbench: error: ") and err.count("\n") == 1, (code, err)
    assert message in err and str(damaged) in err, err
    assert (snapshot(damaged), snapshot(unsigned)) == before


# The committed side study's results, which hold layer diagnostics (and no manifest): plot and report read its
# diagnostics.csv, which the checked reader does not (normbench.results.table.read_table does).
WITH_DIAGNOSTICS = Path(__file__).resolve().parents[1] / "results" / "transformer_norms"


def diagnostics_row_cut(d):
    """The second row cut short and the rest of the table after it, as a copy that lost a block might leave it."""
    lines = (d / "diagnostics.csv").read_text().splitlines(keepends=True)
    (d / "diagnostics.csv").write_text("".join([*lines[:2], lines[2][:200] + "\n", *lines[3:]]))


# What plot and report said before (c7b44a6): "line 3 has 21 of 21 fields", "is empty or lacks the columns epoch,
# epoch, layer, pre_std, ...", "holds a value that is not of its column's type (setting an array element with a
# sequence...)" for the cut line, and tracebacks for the last two.
DAMAGED_DIAGNOSTICS = {
    "a row cut short": (diagnostics_row_cut, "diagnostics.csv' line 3 has 23 fields where its header has 24: the"),
    "a column missing": (
        without_column("diagnostics.csv", "grad_norm"),
        "diagnostics.csv' lacks the column grad_norm: it is",
    ),
    "cut mid-line": (
        lambda d: write("diagnostics.csv", (d / "diagnostics.csv").read_bytes()[:-7])(d),
        "diagnostics.csv' ends mid-line (line ",
    ),
    "not UTF-8": (write("diagnostics.csv", b"epoch,\xff\n"), "diagnostics.csv' is not UTF-8 text (byte 6 is not)"),
    "a directory": (a_directory("diagnostics.csv"), "diagnostics.csv' is a directory, not the file normbench"),
}


@pytest.fixture(scope="module")
def with_diagnostics(tmp_path_factory):
    """The committed study without its manifest: the cases are of the table's own checks, which are what reads a
    results directory that no manifest vouches for (one written before manifests, or read with --trust-edits)."""
    copy = shutil.copytree(WITH_DIAGNOSTICS, tmp_path_factory.mktemp("diagnostics") / "results")
    (copy / "manifest.json").unlink(missing_ok=True)
    return copy


@pytest.mark.parametrize("reader", ("plot", "report"))
@pytest.mark.parametrize("case", DAMAGED_DIAGNOSTICS)
def test_damaged_diagnostics_are_one_line_exit_2_and_stay_as_they_were(with_diagnostics, tmp_path, case, reader):
    damage, message = DAMAGED_DIAGNOSTICS[case]
    damaged = shutil.copytree(with_diagnostics, tmp_path / "damaged")
    damage(damaged)
    before = snapshot(damaged)
    code, err = read_with(reader, damaged, None)
    assert code == 2 and err.startswith("normbench: error: ") and err.count("\n") == 1, (code, err)
    assert message in err and str(damaged) in err, err
    assert snapshot(damaged) == before


# Issue 29's first finding, each cause as it was found: a set of one int per tested epoch (25 GiB in half a minute,
# OOM-killing CI's fuzz worker), and one traced permutation per pass (503 s at 2.2 GB; PreciseBN's examples are
# drawn in passes too). Each is a valid run of fewer than 2**31 steps, which show must describe at the cost of any
# other.
COSTLY_TO_DESCRIBE = {
    "a tested epoch in each of 369,346,492": ["train.epochs=369346492", "train.test_every=1"],
    "1,176,740 steps of whole passes": ["train.min_steps=1176740"],
    "2**31 - 1 examples for PreciseBN": ["train.precise_bn_examples=2147483647"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", COSTLY_TO_DESCRIBE)
def test_show_describes_a_run_of_any_length_within_1_gib_and_10_cpu_seconds(tmp_path, case):
    config = tmp_path / "tiny.py"
    config.write_text(study_text())
    limited = Sandbox(memory_bytes=2**30, cpu_seconds=10)
    try:
        code, err = limited.cli(["show", str(config), *[a for s in COSTLY_TO_DESCRIBE[case] for a in ("--set", s)]])
    finally:
        limited.close()
    assert (code, err) == (0, "")


@pytest.mark.slow
def test_run_refuses_a_sweep_too_large_whatever_its_tested_epochs_within_1_gib(tmp_path):
    """`run` counted the tested epochs as show did (above) before its size guard could refuse the sweep."""
    config = tmp_path / "tiny.py"
    config.write_text(study_text())
    sweep = ["train.epochs=369346492", "train.test_every=1", "sweep.seeds=" + ",".join(map(str, range(2000)))]
    args = ["run", str(config), "--out", str(tmp_path / "out"), *[a for s in sweep for a in ("--set", s)]]
    limited = Sandbox(memory_bytes=2**30, cpu_seconds=10)
    try:
        code, err = limited.cli(args)
    finally:
        limited.close()
    assert code == 2 and err.startswith("normbench: error: the sweep needs about ") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def swap_in(out, files, done):
    """As a --force run swaps its results in: holding the directory's lock, build `files` beside it and swap."""
    with exclusive(out) as lock:
        replacement = start(out)
        for name, data in files.items():
            (replacement / name).write_bytes(data)
        replace(out, replacement, OWNED, lock)
    done.set()


def halved_train_accuracy(old, directory):
    """The results in `old`, unsigned, with every train accuracy halved and drawn again."""
    shutil.copytree(old, directory)
    (directory / "manifest.json").unlink(missing_ok=True)
    rows = list(csv.reader(io.StringIO((directory / "metrics.csv").read_text())))
    column = rows[0].index("train_acc")
    for row in rows[1:]:
        row[column] = f"{float(row[column]) / 2:.7g}"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    (directory / "metrics.csv").write_text(text.getvalue())
    assert main(["plot", str(directory)]) == 0
    return directory


@pytest.mark.parametrize("revised", [False, True], ids=["plot", "plot --config"])
def test_a_force_swap_during_a_plot_leaves_the_new_results_whole(study, tmp_path, monkeypatch, revised):
    """The swap comes between the plot's reading the old results and its first write (c7b44a6 took no lock: the
    old figure and summary.md landed among the new results, in 3 of 4 free races; with --config also the old
    config.json): the plot holds the directory, so the swap waits for it."""
    config, old = study
    out = shutil.copytree(old, tmp_path / "results")
    expected = snapshot(halved_train_accuracy(old, tmp_path / "new"))
    assert expected["summary.md"] != snapshot(out)["summary.md"]
    write, swapped, swapping = plots.atomic_write, threading.Event(), []

    def overtaken(path, data):
        if not swapping:
            swapping.append(threading.Thread(target=swap_in, args=(out, expected, swapped)))
            swapping[0].start()
            swapped.wait(timeout=1)  # ample for the swap (a few files), unless the plot holds it off
        write(path, data)

    monkeypatch.setattr(plots, "atomic_write", overtaken)
    assert main(["plot", str(out), *(["--config", str(config)] if revised else [])]) == 0
    swapping[0].join()
    assert snapshot(out) == expected


def test_force_removes_every_figure_normbench_drew_in_every_format(tmp_path):
    """c7b44a6 listed only .png figures as normbench's own: a --force run left `plot --format svg|pdf`'s."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("init_scale.png", "init_scale.svg", "init_scale.pdf", "activations.svg", "manifest.json", "notes.txt"):
        (out / name).write_text("old")
    with exclusive(out) as lock:
        new = start(out)
        (new / "metrics.csv").write_text("new")
        replace(out, new, OWNED, lock)
    assert snapshot(out) == {"metrics.csv": b"new", "notes.txt": b"old"}


@pytest.mark.parametrize("reader", READERS)
def test_a_hand_edited_config_json_is_one_line_exit_2_and_stays_as_it_was(study, tmp_path, reader):
    """c7b44a6 read it as the run's: the report showed a config that did not produce the rows."""
    out = shutil.copytree(study[1], tmp_path / "results")
    saved = json.loads((out / "config.json").read_text())
    saved["config"]["train"]["weight_decay"] = 0.5
    (out / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    before = snapshot(out)
    code, err = read_with(reader, out, study[1])
    assert code == 2 and err.count("\n") == 1, (code, err)
    assert err.startswith(f"normbench: error: '{out / 'config.json'}' changed since the run wrote it"), err
    assert snapshot(out) == before


def refuse(path, *args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system", str(path))


# Each command's write into the results directory (A) refused as a read-only file system refuses it: c7b44a6 gave
# an OSError traceback from each.
INTO_A_READ_ONLY_DIRECTORY = {
    "plot": (["plot", "{A}"], "normbench.reports.plots.atomic_write", "cannot write into '{A}'"),
    "report": (["report", "{A}"], "normbench.reports.report.atomic_write", "cannot write into '{A}'"),
    "compare --plot": (
        ["compare", "{A}", "{B}", "--plot", "{A}/compare.png"],
        "matplotlib.figure.Figure.savefig",
        "cannot write '{A}/compare.png'",
    ),
}


@pytest.mark.parametrize("case", INTO_A_READ_ONLY_DIRECTORY)
def test_a_write_into_a_read_only_directory_is_one_line_exit_1(study, tmp_path, capsys, monkeypatch, case):
    args, writer, message = INTO_A_READ_ONLY_DIRECTORY[case]
    out = shutil.copytree(study[1], tmp_path / "results")
    before = snapshot(out)
    monkeypatch.setattr(writer, refuse)
    capsys.readouterr()
    assert main([arg.format(A=out, B=study[1]) for arg in args]) == 1
    err = capsys.readouterr().err
    assert err == f"normbench: error: {message.format(A=out)}: Read-only file system\n", err
    assert snapshot(out) == before


def test_an_out_the_machine_refuses_is_exit_1_and_one_under_a_file_exit_2(study, tmp_path, capsys, monkeypatch):
    """`run --out` on a read-only file system was exit 2, as if the user had named a bad path."""
    config, _ = study
    (tmp_path / "file").write_text("not a directory")
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "file" / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"normbench: error: cannot write results to '{tmp_path}/file/results': Not a directory\n", err
    monkeypatch.setattr("normbench.results.store.make_writable", refuse)
    assert main(["run", str(config), "--out", str(tmp_path / "results"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"normbench: error: cannot write results to '{tmp_path}/results': Read-only file system\n", err


def test_a_run_too_short_to_time_leaves_the_estimate_uncalibrated(tmp_path, capsys, monkeypatch):
    """The tiny study trains for a fraction of a second, mostly fixed costs: c7b44a6 kept it as this machine's rate
    (0.137 GFLOP/s), after which estimates read "408 h" where minutes were due."""
    monkeypatch.setattr(calibration, "cache_dir", lambda: tmp_path / "calibration")
    config = tmp_path / "tiny.py"
    config.write_text(study_text())
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert calibration.last_rate(calibration.device_kind()) is None
    assert main(["show", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("run once to calibrate")


def test_the_time_estimate_says_it_leaves_out_compiling(tmp_path, capsys, monkeypatch):
    """c7b44a6 estimated "0.1 s to 0.6 s" for 336 cells without a word of compiling each first."""
    monkeypatch.setattr(calibration, "cache_dir", lambda: tmp_path / "calibration")
    config = tmp_path / "tiny.py"
    config.write_text(study_text())
    assert main(["show", str(config)]) == 0
    assert "of training at an assumed 20-100 GFLOP/s, not counting compiling its 2 cells" in capsys.readouterr().out


def test_the_memory_guard_counts_the_address_space_rlimit_as_leaves(tmp_path):
    """Under `ulimit -v` a sweep passed the guard (80% of physical memory) and died in a RESOURCE_EXHAUSTED
    traceback; it is refused in one line, its limit read from what RLIMIT_AS leaves the process."""
    config = tmp_path / "tiny.py"
    config.write_text(study_text())
    limited = Sandbox(memory_bytes=3 * 2**30, cpu_seconds=300)
    seeds = ",".join(map(str, range(16)))  # about 3 GiB of runs in an MLP 784-1024-1024-10
    sweep = ["--set", "model.hidden=1024,1024", "--set", f"sweep.seeds={seeds}", "--out", str(tmp_path / "out")]
    try:
        code, err = limited.cli(["run", str(config), *sweep, "--quiet"])
    finally:
        limited.close()
    assert code == 2 and err.startswith("normbench: error: the sweep needs about ") and err.count("\n") == 1, err
    available = int(re.search(r"more than the ([\d,]+) MiB available", err)[1].replace(",", ""))
    assert available < budget.CPU_SHARE * limited.memory_bytes / budget.MIB
    assert not (tmp_path / "out").exists()


def test_the_cgroup_memory_limit_is_the_least_along_the_process_path(tmp_path):
    """A container's memory limit, which c7b44a6's guard did not read (it counted 80% of physical memory)."""

    def limits(files: dict[str, str], membership: str):
        for path, text in files.items():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(text)
        (tmp_path / "cgroup").write_text(membership)
        return budget.cgroup_limit(tmp_path / "fs", tmp_path / "cgroup")

    # cgroup v2: the container's limit is its parent slice's; "max" is none
    v2 = {"fs/memory.max": "max", "fs/box/memory.max": "4294967296\n", "fs/box/app/memory.max": "max\n"}
    assert limits(v2, "a line of no form\n0::/box/app\n") == 4 * 2**30
    # cgroup v1, among other controllers: "no limit" is a page-rounded 2**63 - 1
    v1 = {"fs/memory/docker/memory.limit_in_bytes": "1073741824", "fs/memory/docker/abc/memory.limit_in_bytes":
          "9223372036854771712"}  # fmt: skip
    assert limits(v1, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n") == 2**30
