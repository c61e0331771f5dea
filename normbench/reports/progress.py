"""What a sweep tells while it runs: events sent to a `Progress` object, shown as log lines or a live bar.

`run_sweep` calls `sweep_started` once, then for each cell `compiling` (when its compile starts, which overlaps
the previous cell's training), `training` and `cell_done`. A cell trains as one compiled call today, so nothing
is heard from inside it; training in segments of epochs reports each segment with `epochs_done`, which the
displays below already show.

- `Progress` ignores every event: subclass it for another listener (`normbench.reports.tensorboard` is one).
- `LogProgress` writes one line per event to the standard `logging` logger "normbench", at INFO, so a library
  user sees them after `logging.basicConfig(level=logging.INFO)`.
- `LiveProgress` draws a rich progress bar (elapsed time, ETA, the cell training, the cell compiling, the best
  run so far); the finished cells' log lines scroll above it.
- `console_progress(...)` is what the CLI uses: the live bar on a terminal, plain log lines otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import numpy as np

from normbench.config import Config
from normbench.core.grid import Cell, run_values, steps_per_epoch

logger = logging.getLogger("normbench")


class Progress:
    """A listener to a sweep's events; every event is ignored unless a subclass overrides it."""

    def sweep_started(self, config: Config, cells: list[Cell], n_train: int) -> None:
        pass

    def compiling(self, index: int) -> None:
        pass

    def training(self, index: int) -> None:
        pass

    def epochs_done(self, index: int, epochs: int) -> None:
        """Cell `index` has trained `epochs` epochs so far (of `config.train.epochs`)."""

    def cell_done(self, index: int, result) -> None:
        """Cell `index` is trained; `result` is its `normbench.core.sweep.CellResult`."""


class Fanout(Progress):
    """Sends each event to several listeners, in order."""

    def __init__(self, *listeners: Progress):
        self.listeners = listeners

    def sweep_started(self, config, cells, n_train):
        for listener in self.listeners:
            listener.sweep_started(config, cells, n_train)

    def compiling(self, index):
        for listener in self.listeners:
            listener.compiling(index)

    def training(self, index):
        for listener in self.listeners:
            listener.training(index)

    def epochs_done(self, index, epochs):
        for listener in self.listeners:
            listener.epochs_done(index, epochs)

    def cell_done(self, index, result):
        for listener in self.listeners:
            listener.cell_done(index, result)


class LogProgress(Progress):
    """One log line per event, and the best run so far: the highest final test accuracy, mean over seeds."""

    def __init__(self):
        self.best: tuple[float, str] | None = None  # (test accuracy, which cell and values)

    def sweep_started(self, config, cells, n_train):
        self.config, self.cells = config, cells
        self.runs = [len(config.sweep.seeds) * len(run_values(config, cell)["init_scale"]) for cell in cells]
        # A run-step is one optimizer step of one run: the unit of work that the ETA extrapolates.
        self.work = [runs * config.train.epochs * steps_per_epoch(config, cell, n_train)
                     for runs, cell in zip(self.runs, cells)]  # fmt: skip
        plural = "" if len(cells) == 1 else "s"
        epochs = config.train.epochs
        logger.info(f"sweep {config.name}: {len(cells)} cell{plural}, {sum(self.runs)} runs of {epochs} epochs")

    def name(self, index: int) -> str:
        cell = self.cells[index]
        return f"cell {index + 1}/{len(self.cells)} {cell.label()}"

    def compiling(self, index):
        logger.info(f"{self.name(index)}: compiling")

    def training(self, index):
        logger.info(f"{self.name(index)}: training {self.runs[index]} runs")

    def epochs_done(self, index, epochs):
        logger.info(f"{self.name(index)}: epoch {epochs}/{self.config.train.epochs}")

    def cell_done(self, index, result):
        self._update_best(index, result)
        final = result.metrics.train_acc[..., -1]
        logger.info(
            f"{self.name(index)}: {final.size} runs, compile {result.trace_s + result.compile_s:.1f} s "
            f"(waited {result.wait_s:.1f} s), "
            f"train {result.train_s:.1f} s, final train acc mean {final.mean():.3f} "
            f"(min {final.min():.3f}, max {final.max():.3f}); {self.best_text()}"
        )

    def _update_best(self, index, result):
        # Mean over seeds (axis 0) of each value-grid point's final test accuracy; a diverged run's NaN loses.
        per_point = np.nan_to_num(result.metrics.test_acc[..., -1].mean(axis=0), nan=-1.0)
        k = int(np.argmax(per_point))
        if self.best is None or per_point[k] > self.best[0]:
            cell = self.cells[index]
            self.best = float(per_point[k]), f"{cell.label()}{values_label(self.config, cell, k)}"

    def best_text(self) -> str:
        return "best so far: none" if self.best is None else f"best test acc {self.best[0]:.3f}: {self.best[1]}"


def values_label(config: Config, cell: Cell, k: int) -> str:
    """The `k`-th run of one seed of `cell`, naming only the value axes that vary within the cell."""
    values = run_values(config, cell)
    return "".join(f" {column}={v[k]:.3g}" for column, v in values.items() if len(set(v)) > 1)


class LiveProgress(LogProgress):
    """A rich progress bar over the sweep's run-steps, with a status line under it; log lines scroll above."""

    def __init__(self, console):
        from rich import progress as rp
        from rich.text import Text

        super().__init__()
        self.now_training: int | None = None
        self.now_compiling: int | None = None
        status = self

        class Bar(rp.Progress):
            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                yield Text(status.status_line(), overflow="ellipsis", no_wrap=True)

        columns = (rp.SpinnerColumn(), rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
                   rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn())  # fmt: skip
        # Progress arrives in one lump per cell: estimate the speed over the whole sweep, not the last 30 s.
        self.bar = Bar(*columns, console=console, speed_estimate_period=24 * 3600)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def status_line(self) -> str:
        parts = []
        if self.now_training is not None:
            parts.append(f"training {self.cells[self.now_training].label()}")
        if self.now_compiling is not None:
            parts.append(f"compiling cell {self.now_compiling + 1} ({self.cells[self.now_compiling].label()})")
        return "  ".join(parts + [self.best_text()])

    def sweep_started(self, config, cells, n_train):
        super().sweep_started(config, cells, n_train)
        self.task = self.bar.add_task(f"{config.name}: cell 0/{len(cells)}", total=sum(self.work))

    def compiling(self, index):
        self.now_compiling = index
        self.bar.refresh()

    def training(self, index):
        self.now_training = index
        if self.now_compiling == index:
            self.now_compiling = None
        self.bar.update(self.task, description=f"{self.config.name}: cell {index + 1}/{len(self.cells)}")

    def epochs_done(self, index, epochs):
        done_before = sum(self.work[:index])
        self.bar.update(self.task, completed=done_before + self.work[index] * epochs // self.config.train.epochs)

    def cell_done(self, index, result):
        super().cell_done(index, result)
        self.now_training = None
        self.bar.update(self.task, completed=sum(self.work[: index + 1]))


@contextlib.contextmanager
def console_progress(quiet: bool = False, stream=None):
    """The CLI's progress: a live bar when `stream` (default stderr) is a terminal and not `quiet`, else plain
    timestamped log lines; the "normbench" logger writes to `stream` for the duration."""
    from rich.console import Console
    from rich.logging import RichHandler

    stream = stream or sys.stderr
    console = Console(file=stream)
    live = console.is_terminal and not quiet
    if live:
        handler = RichHandler(console=console, show_level=False, show_path=False, log_time_format="[%X]")
        reporter = LiveProgress(console)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        reporter = LogProgress()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with reporter if live else contextlib.nullcontext():
            yield reporter
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
