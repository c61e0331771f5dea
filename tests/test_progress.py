"""A sweep's progress events: their order, the log lines, the live bar, and the CLI's choice between them."""

import dataclasses
import io
import logging
import time

import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.core.grid import cells
from normbench.core.sweep import CellResult, run_sweep
from normbench.core.train import EpochMetrics, Metrics
from normbench.reports.progress import Fanout, LiveProgress, LogProgress, Progress, console_progress


class Recorder(Progress):
    def __init__(self):
        self.events = []

    def sweep_started(self, config, cells, n_train):
        self.events.append(("sweep_started", len(cells), n_train))

    def compiling(self, index):
        self.events.append(("compiling", index))

    def training(self, index):
        self.events.append(("training", index))

    def cell_done(self, index, result):
        self.events.append(("cell_done", index, result.cell.norm))

    def epochs_done(self, index, epochs):
        self.events.append(("epochs_done", index, epochs))


def fake_result(config, cell, test_acc):
    """A CellResult whose final test accuracy is `test_acc[seed][value point]`, over 2 epochs."""
    test_acc = np.asarray(test_acc, np.float32)
    per_epoch = np.stack([test_acc / 2, test_acc], axis=-1)
    scalar = np.zeros(test_acc.shape, np.float32)
    after_training = len(Metrics._fields) - len(EpochMetrics._fields) - 1  # test_acc_batch_stats, ...
    metrics = Metrics(*(per_epoch,) * len(EpochMetrics._fields), *(scalar,) * after_training, scalar.astype(np.int32))
    return CellResult(cell, metrics, trace_s=0.5, compile_s=1.0, wait_s=0.5, train_s=2.0)


class EpochRecorder(Recorder):
    per_epoch = True


def test_a_sweep_reports_each_cell_compiling_training_its_epochs_and_done_in_order(caplog):
    config = tiny_config(norms=("batch", "none"), seeds=(0, 1), init_scales=(1.0, 0.1, 0.01))
    recorder = EpochRecorder()
    with caplog.at_level(logging.INFO, logger="normbench"):
        run_sweep(config, tiny_dataset(), Fanout(recorder, LogProgress()))
    # Each epoch is heard once as it ends, between the cell's epoch programs: not once per run of the six.
    for i in (0, 1):
        events = [e for e in recorder.events if e[1] == i]
        assert events[-4:] == [("training", i), ("epochs_done", i, 1), ("epochs_done", i, 2), events[-1]]
        assert events[-1][0] == "cell_done"
    # The second cell compiles while the first trains.
    assert [e for e in recorder.events if e[0] != "epochs_done"] == [
        ("sweep_started", 2, 48),
        ("compiling", 0), ("compiling", 1), ("training", 0), ("cell_done", 0, "batch"),
        ("training", 1), ("cell_done", 1, "none"),
    ]  # fmt: skip
    lines = caplog.messages
    assert lines[0] == "sweep tiny: 2 cells, 12 runs of 2 epochs"
    assert "cell 2/2 mlp none sgd batch=8: compiling" in lines
    assert "cell 1/2 mlp batch sgd batch=8: training 6 runs" in lines
    assert lines[-1].startswith("cell 2/2 mlp none sgd batch=8: 6 runs, compile ")
    # Each cell's line ends with its own best run, never the other cell's.
    own_best = lines[-1].split("; ")[-1]
    assert own_best.startswith("its best: test acc ") and " at model=mlp norm=none protocol=sgd batch=8 " in own_best


@pytest.mark.slow
def test_a_grid_trained_in_chunks_of_seeds_reports_each_epoch_once():
    config = tiny_config(seeds=(0, 1))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, chunk_size=1))
    recorder = EpochRecorder()
    run_sweep(config, tiny_dataset(), recorder)
    # Each epoch program runs both chunks of one seed: an epoch is done when both are.
    assert [e[2] for e in recorder.events if e[0] == "epochs_done"] == [1, 2]


def test_the_best_run_so_far_is_the_best_mean_over_seeds_and_names_its_values():
    config = tiny_config(norms=("batch", "none"), init_scales=(1.0, 0.1), seeds=(0, 1))
    batch, none = cells(config)
    progress = LogProgress()
    progress.sweep_started(config, [batch, none], n_train=64)
    assert progress.best_text() == "best so far: no finished run yet"  # "none" would read as the norm
    # Seed 1 at init 0.1 is the best single run, but init 1.0 is better on average over the seeds.
    progress.cell_done(0, fake_result(config, batch, [[0.8, 0.4], [0.6, 0.95]]))
    on_axes = "model=mlp norm=batch protocol=sgd batch=8 init_scale=1 learning_rate=0.1 ghost_size=8"
    assert progress.best_text() == f"best so far: test acc 0.700 (mean of 2 seeds) at {on_axes}"
    progress.cell_done(1, fake_result(config, none, [[np.nan, 0.3], [0.9, 0.3]]))  # a diverged seed loses
    assert progress.best_text() == f"best so far: test acc 0.700 (mean of 2 seeds) at {on_axes}"
    progress.cell_done(1, fake_result(config, none, [[0.9, 0.3], [0.8, 0.3]]))
    assert progress.best_text().startswith("best so far: test acc 0.850 (mean of 2 seeds) at model=mlp norm=none ")


def test_the_live_bar_shows_every_cell_training_and_reaches_100_percent_once_at_the_end():
    from rich.console import Console

    config = tiny_config(norms=("batch", "none", "layer"), seeds=(0, 1))
    todo = cells(config)
    screen = io.StringIO()
    seen = []
    with LiveProgress(Console(file=screen, force_terminal=True, width=200)) as live:

        def show():
            live.bar.refresh()
            seen.append(live.bar.tasks[0].percentage)

        live.sweep_started(config, todo, n_train=64)
        live.compiling(0)
        live.compiling(1)
        live.training(0)
        live.training(1)
        live.compiling(2)
        assert live.status_line() == (
            "training cell 1 (mlp batch sgd batch=8) epoch 0/2  training cell 2 (mlp none sgd batch=8) epoch 0/2  "
            "compiling cell 3 (mlp layer sgd batch=8)  best so far: no finished run yet"
        )
        live.epochs_done(0, 1)
        show()
        assert seen[-1] == pytest.approx(100 / 6)  # half of the first of three equal cells
        # The second cell finishes first: the bar counts it, and the first keeps its epoch.
        live.epochs_done(1, 1)
        live.cell_done(1, fake_result(config, todo[1], [[0.5, 0.7], [0.5, 0.9]]))
        show()
        assert seen[-1] == pytest.approx(100 * (0.5 + 1) / 3)
        live.training(2)
        live.epochs_done(0, 2)  # the last epoch's report is the cell's end, which `cell_done` counts
        live.epochs_done(2, 1)
        live.cell_done(2, fake_result(config, todo[2], [[0.1, 0.1], [0.1, 0.1]]))
        show()
        assert "norm=none" in live.status_line() and "training cell 1 " in live.status_line()
        assert seen[-1] < 100
        live.cell_done(0, fake_result(config, todo[0], [[0.1, 0.1], [0.1, 0.1]]))
        show()
    assert seen == sorted(seen) and seen.count(100) == 1 and seen[-1] == 100
    shown = screen.getvalue()
    assert "tiny: 3/3 cells done" in shown and "ETA" in shown


def test_the_live_bar_shows_an_eta_within_the_first_tenth_of_the_sweep():
    from rich.console import Console

    config = tiny_config(norms=("batch", "none"))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=20))
    screen = io.StringIO()
    with LiveProgress(Console(file=screen, force_terminal=True, width=200)) as live:
        live.sweep_started(config, cells(config), n_train=64)
        live.training(0)
        for epoch in (0, 1, 2):  # as each begins; rich estimates a speed from two advances
            live.epochs_done(0, epoch)
            time.sleep(0.01)
        live.bar.refresh()
        assert live.bar.tasks[0].percentage <= 10
        assert live.bar.tasks[0].time_remaining is not None
    assert "ETA" in screen.getvalue()


def test_the_cli_logs_each_line_once_when_a_library_gave_the_root_logger_a_handler():
    root = io.StringIO()
    handler = logging.StreamHandler(root)
    logging.getLogger().addHandler(handler)  # as orbax's import does when a sweep checkpoints
    try:
        piped = io.StringIO()
        config = tiny_config()
        with console_progress(stream=piped) as progress:
            progress.sweep_started(config, cells(config), n_train=64)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "sweep tiny" in piped.getvalue() and root.getvalue() == ""
    assert logging.getLogger("normbench").propagate


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_cli_draws_a_live_bar_on_a_terminal_and_plain_lines_otherwise():
    with console_progress(stream=Terminal()) as progress:
        assert type(progress) is LiveProgress
    with console_progress(quiet=True, stream=Terminal()) as progress:
        assert type(progress) is LogProgress
    piped = io.StringIO()
    config = tiny_config()
    with console_progress(stream=piped) as progress:
        assert type(progress) is LogProgress
        progress.sweep_started(config, cells(config), n_train=64)
    # hh:mm:ss, then the message; the handler is gone once the sweep is over
    assert piped.getvalue()[8:] == " sweep tiny: 1 cell, 4 runs of 2 epochs\n"
    assert not logging.getLogger("normbench").handlers
