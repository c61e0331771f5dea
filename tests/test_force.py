"""`--force` over another config's results: the directory is always one config's complete results, a kill at any
point of the replacement included, and only normbench's own files are removed."""

import json
import re
import shutil
import signal

import pytest
from conftest import snapshot, study_text
from test_resume import finish, normbench

import normbench as normbench_api
from normbench.cli import main
from normbench.errors import UserError
from normbench.results.resume import Unfinished
from normbench.results.store import exclusive, replace
from normbench.results.swap import settle, siblings, start
from normbench.study import OWNED

# The old results have layer diagnostics (and their figures) and a report; the new config has neither.
OLD = study_text(train="TrainConfig(epochs=2, eval_batch_size=16, diagnostics_at=(0, 2))")
NEW = study_text(sweep='SweepConfig(norms=("layer", "none"), batch_sizes=(16,), init_scales=(1.0,), seeds=(0,))')
THIRD = study_text(sweep='SweepConfig(norms=("none",), batch_sizes=(16,), init_scales=(1.0,), seeds=(0,))')
# The estimates kept in the program cache and the machine's calibration: written beside, not into, the results.
CACHE_JSON = re.compile(r"write:([0-9a-f]{64}|calibration)\.json")
USERS = {"notes.txt": b"mine", ".draft.tmp": b"mine too", "sub/.x.tmp": b"and mine"}


def without_run_state(files):
    return {name: data for name, data in files.items() if not name.startswith(("unfinished/", ".lock"))}


def tables(files):
    """What must match between two runs of one config: every file but config.json's timings (and so its sha256 in
    manifest.json), and its config."""
    same = {name: data for name, data in files.items() if name not in ("config.json", "manifest.json")}
    signed = {name: sha for name, sha in json.loads(files["manifest.json"])["sha256"].items() if name != "config.json"}
    return same, json.loads(files["config.json"])["config"], signed


@pytest.fixture(scope="module")
def replaced(tmp_path_factory):
    """Old results (with a user's files) and what a --force run of another config turns them into, and the named
    points that run passes through, each as `<point>#<n>` (the n-th time)."""
    tmp_path = tmp_path_factory.mktemp("force")
    configs = {}
    for name, text in (("old", OLD), ("new", NEW), ("third", THIRD)):
        configs[name] = tmp_path / f"{name}.py"
        configs[name].write_text(text)
    old, new = tmp_path / "old", tmp_path / "new"
    assert main(["run", str(configs["old"]), "--out", str(old)]) == 0
    assert main(["report", str(old)]) == 0
    for name, data in USERS.items():
        (old / name).parent.mkdir(exist_ok=True)
        (old / name).write_bytes(data)
    expected_old = without_run_state(snapshot(old))
    shutil.copytree(old, new)
    log = tmp_path / "points"
    code, output = finish(normbench(configs["new"], new, force=True, workers=1, env={"NORMBENCH_POINTS": str(log)}))
    assert code == 0, output
    expected_new = tables(without_run_state(snapshot(new)))
    assert {"activations.png", "diagnostics.csv", "report.html"}.isdisjoint(expected_new[0])
    assert set(USERS) <= set(expected_new[0]), "a user's own files stay"
    points, seen = [], {}
    for point in log.read_text().split():
        if point.endswith((".exe", ".npz")) or CACHE_JSON.fullmatch(point):  # the caches' entries, not the results'
            continue
        seen[point] = seen.get(point, 0) + 1
        points.append(f"{point}#{seen[point]}")
    return configs, old, expected_old, expected_new, points


def kill_and_check(replaced, tmp_path, point, first_look, env=None) -> bool:
    """Kill a --force run at `point`, let `first_look(out)` be the first command to see the directory, and check
    that it then holds the old or the new results, whole, and that the next commands behave; True if old."""
    configs, old, expected_old, expected_new, _ = replaced
    out = tmp_path / point.replace(":", "_").replace("#", "_")
    shutil.copytree(old, out)
    code, output = finish(normbench(configs["new"], out, kill_at=point, force=True, workers=1, env=env))
    assert code == -signal.SIGKILL, (point, output)
    first_look(out)
    after = without_run_state(snapshot(out))
    assert after == expected_old or tables(after) == expected_new, point
    # The next run (here one that is refused: a third config without --force) changes nothing and clears away
    # what the killed run left beside the directory; plot draws the results that are there.
    code, output = finish(normbench(configs["third"], out))
    assert code == 2 and "holds results of a different config" in output, (point, output)
    assert without_run_state(snapshot(out)) == after, point
    assert not list(tmp_path.glob(f"{out.name}.normbench-*")), point
    assert main(["plot", str(out)]) == 0, point
    return after == expected_old


@pytest.mark.slow
def test_a_force_run_killed_at_any_point_leaves_old_or_new_results(replaced, tmp_path):
    """With renameat2's exchange: on disk, right after the kill, before any other command has looked."""
    points = replaced[-1]
    assert {"write:metrics.csv#1", "swap:built#1", "swap:exchanged#1"} <= set(points)
    outcomes = [kill_and_check(replaced, tmp_path, point, first_look=lambda out: None) for point in points]
    assert True in outcomes and False in outcomes, "kills fall both before and after the point of no return"
    print(f"{len(points)} kill points, {outcomes.count(True)} left the old results, the rest the new")


@pytest.mark.slow
def test_without_the_exchange_every_command_first_finishes_a_halfway_swap(replaced, tmp_path):
    """Two renames: killed between them, the directory is missing until a command settles it."""

    def load_first(out):
        if not out.exists():
            assert (tmp_path / f"{out.name}.normbench-old").exists()
        assert normbench_api.load(out).shape[0] > 0  # the first reader finishes the swap

    env = {"NORMBENCH_SWAP": "rename"}
    points = ["swap:built#1", "swap:moved-old#1", "swap:moved-new#1"]
    outcomes = [kill_and_check(replaced, tmp_path, point, load_first, env) for point in points]
    assert outcomes == [True, False, False]


def test_replace_carries_the_users_files_and_the_lock(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "unfinished" / "cells").mkdir(parents=True)
    for name in ("config.json", "metrics.csv", "activations.png", "report.html", "notes.txt", "sub/data.txt",
                 ".metrics.csv.x.normbench.tmp", "unfinished/cells/0000.csv"):  # fmt: skip
        (out / name).write_text("old")
    with exclusive(out) as lock:
        new = start(out)
        for name in ("config.json", "metrics.csv", "summary.md"):
            (new / name).write_text("new")
        replace(out, new, OWNED, lock)
        assert not new.exists(), "the old directory is gone"
        with pytest.raises(UserError, match="another normbench run"):  # the lock holds in the new directory
            with exclusive(out):
                pass
    assert snapshot(out) == {
        "config.json": b"new", "metrics.csv": b"new", "summary.md": b"new", "notes.txt": b"old", "sub/data.txt": b"old"
    }  # fmt: skip


def test_settle_finishes_a_swap_stopped_between_its_renames(tmp_path):
    out = tmp_path / "out"
    new, old = siblings(out)
    new.mkdir()
    (new / "metrics.csv").write_text("new")
    old.mkdir()
    (old / "metrics.csv").write_text("old")
    settle(out)
    assert (out / "metrics.csv").read_text() == "new" and not new.exists()
    settle(out)  # nothing more to do
    assert (out / "metrics.csv").read_text() == "new"


def test_the_lock_removes_only_normbench_temporary_files(tmp_path):
    for name in (".metrics.csv.abc.normbench.tmp", "unfinished/cells/.0000.csv.x.normbench.tmp", *USERS):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    with exclusive(tmp_path):
        pass
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(USERS)  # the lock went with the run


def test_an_unfinished_run_without_its_config_holds_no_config(tmp_path):
    from conftest import tiny_config

    (tmp_path / "unfinished" / "cells").mkdir(parents=True)
    (tmp_path / "unfinished" / "cells" / "0000.csv").write_text("rows of some other config")
    unfinished = Unfinished(tmp_path)
    unfinished.begin(tiny_config(), force=False)
    assert unfinished.finished() == {}


def test_an_unfinished_run_of_another_config_lets_no_run_replace_results_without_force(study, tmp_path, capsys):
    """A --force run of another config that failed before its first cell left its unfinished/; the same run
    without --force then took that for its own interrupted run, and replaced the finished results."""
    config, out = study
    out = shutil.copytree(out, tmp_path / "results")
    other = ["--set", "sweep.learning_rates=0.1"]
    from normbench.cli import _resolve, parser

    Unfinished(out).begin(_resolve(parser().parse_args(["run", str(config), *other])), force=True)
    before = snapshot(out)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), *other]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: ") and err.count("\n") == 1, err
    assert "holds results of a different config (differs in sweep.learning_rates)" in err
    assert snapshot(out) == before
