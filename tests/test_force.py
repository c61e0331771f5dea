"""`--force` over another config's results: the directory is always one config's complete results, a kill at any
point of the replacement included, and only normbench's own files are removed."""

import json
import shutil
import signal

import pytest
from conftest import snapshot, study_text
from test_resume import finish, normbench

from normbench.cli import main
from normbench.results.resume import Unfinished
from normbench.results.store import commit, exclusive, stage
from normbench.study import OWNED

# The old results have layer diagnostics (and their figures) and a report; the new config has neither.
OLD = study_text(train="TrainConfig(epochs=2, eval_batch_size=16, diagnostics_at=(0, 2))")
NEW = study_text(sweep='SweepConfig(norms=("layer", "none"), batch_sizes=(16,), init_scales=(1.0,), seeds=(0,))')
THIRD = study_text(sweep='SweepConfig(norms=("none",), batch_sizes=(16,), init_scales=(1.0,), seeds=(0,))')
USERS = {"notes.txt": b"mine", ".draft.tmp": b"mine too", "sub/.x.tmp": b"and mine"}


def without_run_state(files):
    return {name: data for name, data in files.items() if not name.startswith(("unfinished/", ".lock"))}


def tables(files):
    """What must match between two runs of one config: every file but config.json's timings, and its config."""
    same = {name: data for name, data in files.items() if name != "config.json"}
    return same, json.loads(files["config.json"])["config"]


@pytest.mark.slow
def test_a_force_run_killed_at_any_point_leaves_old_or_new_results(tmp_path):
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
        if point.endswith((".pkl", ".npz")):  # the caches' entries, not the results directory's
            continue
        seen[point] = seen.get(point, 0) + 1
        points.append(f"{point}#{seen[point]}")
    assert any(p.startswith("remove:") for p in points) and any(p.startswith("commit:") for p in points)
    outcomes = []
    for point in points:
        out = tmp_path / point.replace(":", "_").replace("#", "_")
        shutil.copytree(old, out)
        code, output = finish(normbench(configs["new"], out, kill_at=point, force=True, workers=1))
        assert code == -signal.SIGKILL, (point, output)
        # The next run (here one that is refused: a third config without --force) finishes or discards the replacement.
        code, output = finish(normbench(configs["third"], out))
        assert code == 2 and "holds results of a different config" in output, (point, output)
        after = without_run_state(snapshot(out))
        assert after == expected_old or tables(after) == expected_new, point
        outcomes.append(after == expected_old)
    assert True in outcomes and False in outcomes, "kills fall both before and after the point of no return"
    print(f"{len(points)} kill points, {outcomes.count(True)} left the old results, the rest the new")


def test_commit_replaces_only_normbench_files_and_finishes_when_repeated(tmp_path):
    out, staged = tmp_path / "out", tmp_path / "out" / "unfinished" / "staged"
    staged.mkdir(parents=True)
    for name in ("config.json", "metrics.csv", "activations.png", "report.html", "notes.txt"):
        (out / name).write_text("old")
    for name in ("config.json", "metrics.csv", "summary.md"):
        (staged / name).write_text("new")
    commit(out, staged, OWNED)
    assert (out / "activations.png").exists(), "nothing is replaced before the staged results are complete"
    stage(staged)
    (staged / "metrics.csv").rename(out / "metrics.csv")  # as a kill mid-commit leaves it
    commit(out, staged, OWNED)
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == {
        "config.json": "new", "metrics.csv": "new", "summary.md": "new", "notes.txt": "old"
    }  # fmt: skip


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
    assert not unfinished.holds(tiny_config())
    unfinished.begin(tiny_config(), force=False)
    assert unfinished.finished() == {}
