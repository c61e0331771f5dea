"""Worker processes, one per core (`normbench run --processes N`, `normbench.runtime.processes`): the same bits as
one process, every event told, each worker on its own core, and a worker's failure raised in the parent."""

import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import study_text, tiny_config, tiny_dataset
from jax.experimental.compilation_cache import compilation_cache

import normbench
from normbench.cli import main
from normbench.config import ConfigError
from normbench.core import sweep
from normbench.core.grid import cells
from normbench.core.listener import Progress
from normbench.core.sweep import Events, device_data, run_sweep, train_in_processes, units
from normbench.errors import MachineError
from normbench.norms import NORMS
from normbench.results.store import metrics_csv
from normbench.runtime.processes import Workers, cores, importable_name
from normbench.runtime.stopping import Stopped, StopRequest


def chunked_config():
    """2 cells: batch 4 vmaps its 3 seeds together (one unit), batch 8 slices them in chunks of 2 (two units,
    the second a remainder of one seed)."""
    config = tiny_config(batch_sizes=(4, 8), seeds=(0, 1, 2))
    return dataclasses.replace(config, train=dataclasses.replace(config.train, chunk_size=2, chunk_min_batch=8))


class Heard(Progress):
    epoch_metrics_wanted = True

    def __init__(self):
        self.events = []

    def epochs_done(self, index, epochs):
        self.events.append(("epochs", index, epochs))

    def epoch_metrics(self, index, epoch, seeds, metrics):
        self.events.append(("metrics", index, epoch, tuple(int(s) for s in seeds), metrics.train_loss.shape))

    def cell_done(self, index, result):
        self.events.append(("done", index))


def test_a_chunked_cell_splits_into_its_chunks_and_any_other_cell_stays_whole():
    config = chunked_config()
    assert [(u.cell, u.seeds) for u in units(config, cells(config))] == [(0, (0, 1, 2)), (1, (0, 1)), (1, (2,))]


@pytest.mark.parametrize(
    "change, train_s, count",
    [
        ({}, 60.0, 2),  # a chunked cell, long enough: a process per core
        ({}, sweep.AUTO_MIN_TRAIN_S / 2, 1),  # too short to pay for starting the workers
        ({"chunk_size": None}, 60.0, 1),  # whole cells: two already train at once in this process
        ({"checkpoint_every": 1}, 60.0, 1),  # worker processes save no checkpoints
    ],
    ids=["chunked", "short", "whole cells", "checkpoints"],
)
def test_auto_starts_a_process_per_core_only_for_long_chunked_sweeps(monkeypatch, change, train_s, count):
    monkeypatch.setattr(sweep, "cores", lambda: [0, 1])
    config = chunked_config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **change))
    assert sweep.auto_processes(config, cells(config), train_s) == count


def test_auto_starts_no_more_workers_than_units_or_its_limit(monkeypatch):
    config = chunked_config()  # 3 units
    monkeypatch.setattr(sweep, "cores", lambda: list(range(64)))
    assert sweep.auto_processes(config, cells(config), 60.0) == 3
    many = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, seeds=tuple(range(40))))
    assert sweep.auto_processes(many, cells(many), 60.0) == sweep.AUTO_MAX_PROCESSES


def test_show_says_when_run_would_start_a_process_per_core(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.py"
    config.write_text(study_text(train="TrainConfig(epochs=2, eval_batch_size=16, chunk_size=1, chunk_min_batch=8)"))
    monkeypatch.setattr(sweep, "cores", lambda: [0, 1])
    assert main(["show", str(config)]) == 0
    assert "worker processes" not in capsys.readouterr().out  # far too short to pay for them
    monkeypatch.setattr(sweep, "AUTO_MIN_TRAIN_S", 0.0)
    assert main(["show", str(config)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "# run trains in 2 worker processes, one per core (--processes 1: in one)"


def test_processes_take_a_count_or_auto():
    from normbench.cli import parser

    assert parser().parse_args(["run", "c.py"]).processes is None
    assert parser().parse_args(["run", "c.py", "--processes", "auto"]).processes is None
    assert parser().parse_args(["run", "c.py", "--processes", "3"]).processes == 3
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "c.py", "--processes", "two"])


@pytest.fixture
def xla_cache_off():
    """A program that XLA's cache loaded cannot travel (`CompiledGrid.payload`): off, every program does."""
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_enable_compilation_cache", before)
    compilation_cache.reset_cache()


@pytest.mark.parametrize(
    "travels",
    # Both start worker processes: 30 s sent (every program compiled afresh), 14 s compiled in the workers. The fast
    # tier starts workers once (`test_each_worker_is_pinned_...`).
    [pytest.param(True, marks=pytest.mark.slow), pytest.param(False, marks=pytest.mark.slow)],
    ids=["programs sent", "programs compiled in the workers"],
)
def test_processes_train_the_bits_of_one_process_and_tell_every_epoch(request, monkeypatch, travels):
    if travels:
        request.getfixturevalue("xla_cache_off")
    config, dataset = chunked_config(), tiny_dataset()
    alone = run_sweep(config, dataset, workers=1)
    sent, original = [], sweep.phases_payloads

    def payloads(phases):
        sent.append(original(phases) if travels else None)
        return sent[-1]

    monkeypatch.setattr(sweep, "phases_payloads", payloads)
    heard = Heard()
    spread = run_sweep(config, dataset, heard, processes=2)
    assert len(sent) == 3 and all((s is not None) == travels for s in sent)  # once per cell and chunk size
    assert [r.cell for r in spread] == [r.cell for r in alone]
    assert [r.processes for r in spread] == [2, 2] and [r.processes for r in alone] == [1, 1]  # config.json's record
    assert metrics_csv(config, spread) == metrics_csv(config, alone)
    for a, b in zip(alone, spread):
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a.metrics, b.metrics))
    assert sorted(e[1] for e in heard.events if e[0] == "done") == [0, 1]
    for index, chunks in enumerate([((0, 1, 2),), ((0, 1), (2,))]):
        told = {(e[2], e[3]) for e in heard.events if e[0] == "metrics" and e[1] == index}
        assert told == {(epoch, seeds) for epoch in (1, 2) for seeds in chunks}
        assert max(e[2] for e in heard.events if e[0] == "epochs" and e[1] == index) == 2


USERS_NORMS = """
import dataclasses

from normbench.norms import NORMS

SPEC = dataclasses.replace(NORMS["batch"], name="users_bn")
"""


@pytest.fixture
def users_bn(tmp_path, monkeypatch):
    """BatchNorm under a user's name, registered as docs/adding_a_norm.md's notebook does: from a module of its
    own, `users_norms`, which a worker process imports (it is on sys.path, which a worker inherits)."""
    (tmp_path / "users_norms.py").write_text(USERS_NORMS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import users_norms

    yield normbench.register_norm(users_norms.SPEC)
    del NORMS["users_bn"], sys.modules["users_norms"]


def test_a_norm_registered_from_a_module_trains_in_workers_and_one_made_elsewhere_in_this_process(
    users_bn, monkeypatch
):
    monkeypatch.setattr(sweep, "cores", lambda: [0, 1])
    config = chunked_config()
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, norms=("batch", "users_bn")))
    assert sweep.norm_addresses(cells(config)) == {"users_bn": ("users_norms", "SPEC")}  # batch: every worker's
    assert sweep.auto_processes(config, cells(config), 60.0) == 2
    normbench.register_norm(dataclasses.replace(users_bn), replace=True)  # equal, but no module's global
    assert sweep.norm_addresses(cells(config))["users_bn"] is None
    assert sweep.auto_processes(config, cells(config), 60.0) == 1
    with pytest.raises(ConfigError, match="norm 'users_bn' was registered in this process from no module's global"):
        run_sweep(config, tiny_dataset(), processes=2)


def test_importable_name_finds_a_module_global_and_nothing_made_in_main_or_a_function():
    assert importable_name(NORMS["batch"]) is not None
    module, attribute = importable_name(NORMS["batch"])
    assert getattr(sys.modules[module], attribute) is NORMS["batch"]
    assert importable_name(dataclasses.replace(NORMS["batch"])) is None
    sys.modules["__main__"].made_in_a_notebook = made = object()
    try:
        assert importable_name(made) is None
    finally:
        del sys.modules["__main__"].made_in_a_notebook


@pytest.mark.slow
def test_a_users_norm_from_a_module_trains_in_workers_with_the_bits_of_one_process(users_bn):
    config, dataset = chunked_config(), tiny_dataset()
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, norms=("users_bn",)))
    alone, spread = run_sweep(config, dataset, workers=1), run_sweep(config, dataset, processes=2)
    assert [r.processes for r in spread] == [2, 2]
    for a, b in zip(alone, spread):
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a.metrics, b.metrics))


class StopAtFirstEpoch(Progress):
    """Asks `stop` as soon as any epoch is told: every unit is then still training."""

    def __init__(self, stop):
        self.stop, self.told = stop, []

    def epochs_done(self, index, epochs):
        self.told.append(epochs)
        self.stop.ask()


@pytest.mark.slow
def test_a_stop_ends_every_unit_in_training_at_its_epoch_and_closes_the_workers():
    config = chunked_config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=300))
    dataset, todo, stop, kept = tiny_dataset(), cells(config), StopRequest(), []
    listener = StopAtFirstEpoch(stop)
    with pytest.raises(Stopped):
        train_in_processes(config, dataset, todo, units(config, todo), device_data(dataset), 2,
                           Events(listener, config, todo), stop, kept.append)  # fmt: skip
    assert kept == [] and 0 < max(listener.told) < 300
    assert multiprocessing.active_children() == []


def _affinity(worker):
    return sorted(os.sched_getaffinity(0))


def _fail(worker, message):
    raise ValueError(message)


def _exit(worker):
    os._exit(3)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="pinning needs Linux")
def test_each_worker_is_pinned_to_its_own_core_and_a_failure_comes_back_as_itself():
    workers = Workers(2, None, {}, lambda *event: None)
    try:
        pinned = [workers.processes[k].run(_affinity, ()) for k in range(2)]
        assert pinned == [[core] for core in (cores() * 2)[:2]]
        with pytest.raises(ValueError, match="a bad unit"):
            workers.run(_fail, "a bad unit")
        with pytest.raises(MachineError, match=r"a worker process ended while training \(exit code 3\)"):
            workers.run(_exit)
    finally:
        workers.close()


@pytest.mark.slow
def test_the_cli_with_processes_writes_the_same_metrics(study, tmp_path):
    config, out = study
    assert main(["run", str(config), "--out", str(tmp_path / "spread"), "--processes", "2"]) == 0
    assert (tmp_path / "spread" / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()


@pytest.mark.slow
def test_the_cli_by_default_trains_a_long_chunked_sweep_in_a_process_per_core(tmp_path, monkeypatch, capsys):
    """`--processes auto`, the default, with its threshold at 0 s so that a tiny chunked study passes it."""
    config = tmp_path / "tiny.py"
    config.write_text(study_text(train="TrainConfig(epochs=2, eval_batch_size=16, chunk_size=1, chunk_min_batch=8)"))
    assert main(["run", str(config), "--out", str(tmp_path / "one"), "--processes", "1"]) == 0
    monkeypatch.setattr(sweep, "AUTO_MIN_TRAIN_S", 0.0)
    monkeypatch.setattr(sweep, "cores", lambda: [0, 1])
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "auto")]) == 0
    assert "training in 2 worker processes, one per core" in capsys.readouterr().err
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["environment"]["worker_processes"] == 2
    assert (tmp_path / "auto" / "metrics.csv").read_bytes() == (tmp_path / "one" / "metrics.csv").read_bytes()


UNGUARDED_SCRIPT = """
import normbench
from normbench.core import sweep

sweep.AUTO_MIN_TRAIN_S, sweep.cores = 0.0, lambda: [0, 1]  # so that auto starts 2 workers for a tiny study
print("the script's top level ran", flush=True)
normbench.run("tiny.py", out="runs/tiny")
"""


@pytest.mark.slow
def test_a_script_that_runs_a_study_at_its_top_level_is_not_run_again_by_the_workers(tmp_path):
    """No `if __name__ == "__main__":` guard: spawn would run the script again in each worker, and so its study."""
    (tmp_path / "tiny.py").write_text(study_text(train="TrainConfig(epochs=2, eval_batch_size=16, chunk_size=1, "
                                                       "chunk_min_batch=8)"))  # fmt: skip
    (tmp_path / "script.py").write_text(UNGUARDED_SCRIPT)
    ran = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("the script's top level ran") == 1
    assert json.loads((tmp_path / "runs/tiny/config.json").read_text())["environment"]["worker_processes"] == 2
