"""Ctrl-C and SIGTERM stop a sweep at an epoch boundary: said at once, every cell in training ends its epoch (its
state saved where checkpoints are on), no cell still compiling starts, and the rerun computes the same bytes."""

import dataclasses
import signal
import threading
import time

import numpy as np
import pytest
from conftest import study_text, tiny_config, tiny_dataset
from test_resume import finish, normbench

from normbench.core.grid import Cell
from normbench.core.sweep import compile_cell, device_data, train_program
from normbench.results.resume import CellCheckpoints
from normbench.runtime.pipeline import pipeline
from normbench.runtime.stopping import MESSAGE, Stopped, StopRequest, stop_on_signals

# Two cells of 6 epochs, each epoch long enough (1,000 steps, most of a second here) to be caught in the middle,
# a checkpoint every 2 epochs: a stop in epoch 3 must save epoch 3 itself.
EPOCHS = ["--set", "train.epochs=6", "--set", "train.steps_per_epoch=1000", "--set", "train.sampling=replacement",
          "--set", "sweep.norms=batch,layer", "--set", "train.checkpoint_every=2"]  # fmt: skip


class Lines:
    """A process's stderr lines as they arrive, each with its time."""

    def __init__(self, process):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for line in process.stderr:
            self.lines.append((time.monotonic(), line))

    def first(self, text):
        return next((t for t, line in self.lines if text in line), None)

    def text(self):
        return "".join(line for _, line in self.lines)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("stopping")
    config = root / "tiny.py"
    config.write_text(study_text())
    code, output = finish(normbench(config, root / "reference", args=EPOCHS), timeout=900)
    assert code == 0, output
    return config, (root / "reference" / "metrics.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_epoch_stops_after_that_epoch_and_the_rerun_computes_the_same_bytes(study, tmp_path, sig):
    config, expected = study
    out = tmp_path / "out"
    process = normbench(config, out, args=EPOCHS)
    lines = Lines(process)
    second = out / "unfinished" / "checkpoints" / "0000" / "2"  # the first cell has begun its third epoch
    deadline = time.monotonic() + 240
    while not second.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    trained_from = lines.first("mlp batch sgd batch=16: training")
    sent = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=120)
    ended = time.monotonic()
    lines.thread.join(timeout=10)
    output = lines.text()
    assert code == 130, output
    assert lines.first(MESSAGE) - sent < 1.0, output
    epoch = (sent - trained_from) / 2  # two epochs and their checkpoint, with the epoch caught: an upper bound
    # It ends as the epoch under way ends: not after the four still to come, nor after the second cell's six.
    assert ended - sent < epoch + 2.0, (ended - sent, epoch, output)
    assert "interrupted; finished cells are kept" in output and "Traceback" not in output
    # The first cell stopped after the epoch under way: its third (saved there, between the saves every 2 epochs),
    # or its second where the signal came after that epoch's save but before its end.
    assert [p.name for p in (out / "unfinished" / "checkpoints" / "0000").iterdir()] in (["2"], ["3"])
    code, output = finish(normbench(config, out, args=EPOCHS), timeout=900)
    assert code == 0, output
    assert (out / "metrics.csv").read_bytes() == expected


@pytest.mark.slow
def test_a_cell_stopped_and_resumed_trains_the_bits_of_one_trained_straight_through(tmp_path):
    config = tiny_config(norms=("batch",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3, checkpoint_every=2))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    data = device_data(dataset)
    program = compile_cell(config, cell, dataset, data)
    stop, heard = StopRequest(), []

    def stop_in_the_first_epoch(epoch, metrics):
        heard.append(epoch)
        stop.ask()

    late = StopRequest()

    def stop_in_the_last_epoch(epoch, metrics):
        if epoch == config.train.epochs:
            late.ask()

    # asked in its last epoch, a cell finishes
    whole = train_program(program, config, cell, data, on_epoch=stop_in_the_last_epoch, stop=late)[1].metrics
    assert late.asked and whole.train_acc.shape[-1] == config.train.epochs

    checkpoints = CellCheckpoints(tmp_path / "checkpoints")
    with pytest.raises(Stopped):
        train_program(program, config, cell, data, checkpoints=checkpoints, on_epoch=stop_in_the_first_epoch,
                      stop=stop)  # fmt: skip
    assert heard == [1] and [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["1"]
    resumed = train_program(program, config, cell, data, checkpoints=checkpoints)[1].metrics
    for name, value in whole._asdict().items():
        np.testing.assert_array_equal(getattr(resumed, name), value, err_msg=name)


def test_the_pipeline_stops_the_cells_in_training_at_their_epoch_and_waits_for_no_compile():
    """Cell 0 trains epoch by epoch; cell 1 compiles for as long as the test holds it. A stop asked during cell 0's
    second epoch ends cell 0 after that epoch, and the pipeline raises at once, cell 1 neither trained nor waited
    for."""
    stop, second_epoch, compiling, release = StopRequest(), threading.Event(), threading.Event(), threading.Event()
    epochs = []

    def compile(i):
        if i == 1:
            compiling.set()
            release.wait(30)
        return i

    def train(i, program, waited):
        for epoch in range(1, 6):
            if epoch == 2:
                second_epoch.set()
            time.sleep(0.05)
            epochs.append((i, epoch))
            if stop.asked:
                raise Stopped
        return i

    def ask_in_the_second_epoch():
        second_epoch.wait(30)
        compiling.wait(30)
        stop.ask()

    asker = threading.Thread(target=ask_in_the_second_epoch)
    asker.start()
    started = time.monotonic()
    try:
        with pytest.raises(Stopped):
            pipeline(2, compile, train, workers=2, stop=stop)
        assert time.monotonic() - started < 5
        assert epochs == [(0, 1), (0, 2)]
    finally:
        release.set()
        asker.join()


def test_a_failure_lets_the_cells_in_training_finish_and_starts_no_other():
    trained = []

    def compile(i):
        if i == 1:
            raise ValueError("no program")
        return i

    def train(i, program, waited):
        time.sleep(0.2)
        trained.append(i)
        return i

    with pytest.raises(ValueError, match="no program"):
        pipeline(4, compile, train, workers=2)
    assert trained == [0]


def test_a_failure_while_a_cell_waits_for_a_queued_compile_leaves_no_thread_behind():
    """Cell 1 compiles until the test releases it, so cell 2's compile is still queued when cell 0 fails: the
    failure cancels it, and cell 2's trainer, waiting for it, must end too (a thread left waiting kept a script
    calling `normbench.run` from exiting after the error)."""
    release, before = threading.Event(), set(threading.enumerate())

    def compile(i):
        if i == 1:
            release.wait(30)
        return i

    def train(i, program, waited):
        time.sleep(0.3)  # cells 1 and 2 are waiting for their programs by then
        raise ValueError("no training")

    try:
        with pytest.raises(ValueError, match="no training"):
            pipeline(3, compile, train, workers=3)
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name.startswith("train") and t not in before]:
        assert time.monotonic() < deadline, "a trainer thread still waits"
        time.sleep(0.05)


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler, as `normbench run` has it: a pytest-xdist worker ignores SIGINT, and the stop
    leaves an ignored signal alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_the_first_signal_asks_the_stop_and_says_so_and_the_second_interrupts(python_sigint):
    stop, said = StopRequest(), []
    with stop_on_signals(stop, said.append):
        signal.raise_signal(signal.SIGINT)
        assert stop.asked and said == [MESSAGE]
        with pytest.raises(KeyboardInterrupt) as raised:
            signal.raise_signal(signal.SIGINT)
        assert not isinstance(raised.value, Stopped)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_that_is_ignored_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = StopRequest()
        with stop_on_signals(stop, print):
            signal.raise_signal(signal.SIGINT)
        assert not stop.asked and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
