"""A sweep's progress events: their order, the log lines, the live bar, and the CLI's choice between them."""

import dataclasses
import io
import logging

import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.core.grid import cells
from normbench.core.sweep import CellResult, run_sweep
from normbench.core.train import Metrics
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
    metrics = Metrics(per_epoch, per_epoch, per_epoch, per_epoch, scalar, scalar, scalar.astype(np.int32))
    return CellResult(cell, metrics, trace_s=0.5, compile_s=1.0, wait_s=0.5, train_s=2.0)


def test_a_sweep_reports_each_cell_compiling_training_and_done_in_order(caplog):
    config = tiny_config(norms=("batch", "none"), seeds=(0,))
    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="normbench"):
        run_sweep(config, tiny_dataset(), Fanout(recorder, LogProgress()))
    # The second cell compiles while the first trains.
    assert recorder.events == [
        ("sweep_started", 2, 48),
        ("compiling", 0), ("compiling", 1), ("training", 0), ("cell_done", 0, "batch"),
        ("training", 1), ("cell_done", 1, "none"),
    ]  # fmt: skip
    lines = caplog.messages
    assert lines[0] == "sweep tiny: 2 cells, 4 runs of 2 epochs"
    assert "cell 2/2 mlp none sgd batch=8: compiling" in lines
    assert "cell 1/2 mlp batch sgd batch=8: training 2 runs" in lines
    assert lines[-1].startswith("cell 2/2 mlp none sgd batch=8: 2 runs, compile ")
    assert "best test acc" in lines[-1]


@pytest.mark.slow
def test_training_in_segments_of_epochs_reports_each_segment():
    config = tiny_config(seeds=(0,))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3, checkpoint_every=2))
    recorder = Recorder()
    run_sweep(config, tiny_dataset(), recorder)
    assert recorder.events[-3:] == [("epochs_done", 0, 2), ("epochs_done", 0, 3), ("cell_done", 0, "batch")]


def test_the_best_run_so_far_is_the_best_mean_over_seeds_and_names_its_values():
    config = tiny_config(norms=("batch", "none"), init_scales=(1.0, 0.1), seeds=(0, 1))
    batch, none = cells(config)
    progress = LogProgress()
    progress.sweep_started(config, [batch, none], n_train=64)
    assert progress.best_text() == "best so far: none"
    # Seed 1 at init 0.1 is the best single run, but init 1.0 is better on average over the seeds.
    progress.cell_done(0, fake_result(config, batch, [[0.8, 0.4], [0.6, 0.95]]))
    assert progress.best_text() == "best test acc 0.700: mlp batch sgd batch=8 init_scale=1"
    progress.cell_done(1, fake_result(config, none, [[np.nan, 0.3], [0.9, 0.3]]))  # a diverged seed loses
    assert progress.best_text() == "best test acc 0.700: mlp batch sgd batch=8 init_scale=1"
    progress.cell_done(1, fake_result(config, none, [[0.9, 0.3], [0.8, 0.3]]))
    assert progress.best_text() == "best test acc 0.850: mlp none sgd batch=8 init_scale=1"


def test_the_live_bar_shows_the_cells_training_and_compiling_the_best_and_the_eta():
    from rich.console import Console

    config = tiny_config(norms=("batch", "none"), seeds=(0, 1))
    batch, none = todo = cells(config)
    screen = io.StringIO()
    with LiveProgress(Console(file=screen, force_terminal=True, width=160)) as live:
        live.sweep_started(config, todo, n_train=64)
        live.compiling(0)
        live.compiling(1)
        live.training(0)
        assert live.status_line() == (
            "training mlp batch sgd batch=8  compiling cell 2 (mlp none sgd batch=8)  best so far: none"
        )
        live.epochs_done(0, 1)
        assert live.bar.tasks[0].percentage == 25  # half of the first of two equal cells
        live.cell_done(0, fake_result(config, batch, [[0.5, 0.7], [0.5, 0.9]]))
        live.training(1)
        best = "best test acc 0.800: mlp batch sgd batch=8 init_scale=0.1"
        assert live.status_line() == f"training mlp none sgd batch=8  {best}"
        live.cell_done(1, fake_result(config, none, [[0.1, 0.1], [0.1, 0.1]]))
        assert live.bar.tasks[0].finished
    shown = screen.getvalue()
    assert "tiny: cell 2/2" in shown and "100%" in shown and "ETA" in shown


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
