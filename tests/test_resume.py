"""Kill a real run (a subprocess) at named points, mid-cell and mid-write, and by signals; rerunning the same
command must finish with exactly the bytes of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import study_text, tiny_config, tiny_dataset

from normbench.core.grid import Cell
from normbench.core.sweep import compile_cell, device_data, train_program
from normbench.results.resume import CellCheckpoints

# 3 cells of 3 epochs, a checkpoint after every epoch, diagnostics at 0 and 2
TINY = study_text(
    train="TrainConfig(epochs=3, eval_batch_size=16, checkpoint_every=1, diagnostics_at=(0, 2))",
    sweep='SweepConfig(norms=("batch", "none", "layer"), batch_sizes=(16,), init_scales=(1.0, 0.1), seeds=(0, 1))',
)


# A run as from a terminal, where Ctrl-C raises KeyboardInterrupt: a test session started in the background (a CI
# job) ignores SIGINT, and a child inherits that, so the run would not hear the signal test's SIGINT at all.
AS_FROM_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'normbench'; runpy.run_module('normbench', run_name='__main__')"
)


def normbench(config, out, kill_at=None, workers=None, force=False, env=None, args=()):
    # The session's NORMBENCH_CACHE (conftest) is inherited, so every run after the first loads its programs.
    env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", **(env or {})}
    env.pop("NORMBENCH_KILL_AT", None)
    if kill_at:
        env["NORMBENCH_KILL_AT"] = kill_at
    command = [sys.executable, "-c", AS_FROM_A_TERMINAL, "run", str(config), "--out", str(out)]
    command += ["--workers", str(workers)] if workers else []
    command += ["--force"] if force else []
    command += list(args)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout + stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.py"
    config.write_text(TINY)
    code, output = finish(normbench(config, root / "reference"))
    assert code == 0, output
    return config, results(root / "reference")


def results(out):
    """The tables a run leaves: what a resumed run must reproduce byte for byte."""
    return [(out / name).read_bytes() for name in ("metrics.csv", "diagnostics.csv")]


@pytest.mark.slow
def test_killed_mid_cell_and_mid_write_resumes_to_the_same_bytes(uninterrupted, tmp_path):
    config, expected = uninterrupted
    out = tmp_path / "out"
    # Each run gets further than the last, then dies at the next point; the last run is left alone. One cell at a
    # time, so that the points come in this order.
    for point in ("checkpoint#2", "write:0000.csv", "write:0001.csv", "checkpoint", "write:metrics.csv",
                  "write:config.json"):  # fmt: skip
        code, output = finish(normbench(config, out, kill_at=point, workers=1))
        assert code == -signal.SIGKILL, (point, output)
        if point == "checkpoint#2":  # killed in the first cell after its second epoch: only that save is kept
            assert [p.name for p in (out / "unfinished" / "checkpoints" / "0000").iterdir()] == ["2"]
    code, output = finish(normbench(config, out))
    assert code == 0, output
    assert "resuming: 3 of 3 cells already finished" in output
    assert results(out) == expected
    assert not (out / "unfinished").exists()
    assert not list(out.rglob("*.tmp")), "the killed writes' temporary files are cleaned up"


@pytest.mark.slow
def test_killed_while_two_cells_train_at_once(uninterrupted, tmp_path):
    config, expected = uninterrupted
    out = tmp_path / "out"
    for point in ("checkpoint#3", "write:0001.csv"):  # the third save may leave the other cell's half-written
        code, output = finish(normbench(config, out, kill_at=point, workers=2))
        assert code == -signal.SIGKILL, (point, output)
    code, output = finish(normbench(config, out, workers=2))
    assert code == 0, output
    assert results(out) == expected


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_a_sentence_and_the_rerun_completes_it(uninterrupted, tmp_path, sig):
    config, expected = uninterrupted
    out = tmp_path / "out"
    # Held for 10 s as the first cell is kept, the run is certainly mid-sweep when the signal lands.
    process = normbench(config, out, env={"NORMBENCH_HOLD_AT": "kept:0"})
    first_cell = out / "unfinished" / "cells" / "0000.csv"
    deadline = time.monotonic() + 240
    while not first_cell.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(sig)
    code, output = finish(process)
    assert code == 130, output
    assert "interrupted; finished cells are kept" in output
    assert "Traceback" not in output
    code, output = finish(normbench(config, out))
    assert code == 0, output
    assert results(out) == expected


@pytest.mark.slow
def test_checkpointed_and_resumed_training_equal_training_straight_through(tmp_path):
    """Saving between epochs, or resuming from a save, changes no bit: the same epoch programs run."""
    import dataclasses

    config = tiny_config(norms=("batch",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
    segmented = dataclasses.replace(config, train=dataclasses.replace(config.train, checkpoint_every=2))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    data = device_data(dataset)
    whole = train_program(compile_cell(config, cell, dataset, data), config, cell, data)[1].metrics
    checkpoints = CellCheckpoints(tmp_path / "checkpoints")
    program = compile_cell(segmented, cell, dataset, data)
    parts = train_program(program, segmented, cell, data, checkpoints=checkpoints)[1].metrics
    # starts from the save after epoch 2
    resumed = train_program(program, segmented, cell, data, checkpoints=checkpoints)[1].metrics
    for name, value in whole._asdict().items():
        np.testing.assert_array_equal(getattr(parts, name), value, err_msg=name)
        np.testing.assert_array_equal(getattr(resumed, name), value, err_msg=name)
