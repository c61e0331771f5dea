"""What a sweep tells while it runs: events sent to a `Progress` object, shown as log lines or a live bar.

`run_sweep` calls `sweep_started` once, then for each cell `compiling` (when its compile starts, which overlaps
the previous cell's training), `training`, `epochs_done` as its epochs go by, and `cell_done`; up to two cells
train at once, so their events interleave and cells may finish out of order. On one device a cell trains epoch by
epoch from the host (`normbench.runtime.phases`), so every listener hears each epoch as it ends, and a listener
whose `epoch_metrics_wanted` is true (TensorBoard's) hears `epoch_metrics`, that epoch's metrics of every run of
the grid, with no callback inside the program: a warm run's programs come from the caches whatever listens.
Over several devices a cell is one program for all epochs: a listener whose `per_epoch` is true makes it call back
to the host as each epoch starts (a `jax.debug.callback` on the epoch index, one call for all runs), and
`epoch_metrics_wanted` as each ends (`normbench.core.train.grid_callback`). Such a program is kept by neither
cache (XLA's cache keys it by the callback's address), so that run compiles it
again however warm the caches.

- `Progress` ignores every event: subclass it for another listener (`normbench.reports.tensorboard` is one).
- `LogProgress` writes one line per event to the standard `logging` logger "normbench", at INFO, so a library
  user sees them after `logging.basicConfig(level=logging.INFO)`.
- `LiveProgress` draws a rich progress bar over the epochs of the whole sweep (elapsed time, ETA), each cell
  training with its epochs, the cell compiling, and the best run so far; finished cells' log lines scroll above.
- `console_progress(...)` is what the CLI uses: the live bar on a terminal, plain log lines otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import numpy as np

from normbench.config import Config
from normbench.core.grid import Cell, plan
from normbench.core.listener import Progress

logger = logging.getLogger("normbench")


class Fanout(Progress):
    """Sends each event to several listeners, in order."""

    def __init__(self, *listeners: Progress):
        self.listeners = listeners
        self.per_epoch = any(listener.per_epoch for listener in listeners)
        self.epoch_metrics_wanted = any(listener.epoch_metrics_wanted for listener in listeners)

    def prepare(self):
        for listener in self.listeners:
            listener.prepare()

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

    def epoch_metrics(self, index, epoch, seeds, metrics):
        for listener in self.listeners:
            listener.epoch_metrics(index, epoch, seeds, metrics)

    def cell_done(self, index, result):
        for listener in self.listeners:
            listener.cell_done(index, result)


class LogProgress(Progress):
    """One log line per event, and the best run so far: the highest final test accuracy, mean over seeds."""

    def __init__(self):
        self.best: tuple[float, str] | None = None  # (test accuracy, which cell and values)
        self.logged: dict[int, float] = {}  # cell index -> the epochs its last "epochs done" line told

    def sweep_started(self, config, cells, n_train):
        self.config, self.cells = config, cells
        self.runs = [plan(config, cell).run_count for cell in cells]
        # A run-step is one optimizer step of one run: the unit of work that the ETA extrapolates.
        self.work = [runs * config.train.epochs * plan(config, cell).steps(n_train).per_epoch
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
        # A line a quarter of the way: a log that a reader scans, not a line per epoch.
        total = self.config.train.epochs
        if epochs < total and int(4 * epochs / total) > int(4 * self.logged.get(index, 0) / total):
            self.logged[index] = epochs
            logger.info(f"{self.name(index)}: {round(epochs, 1):g}/{total} epochs done")

    def cell_done(self, index, result):
        accuracy, run = self._best_of(index, result)
        if self.best is None or accuracy > self.best[0]:
            self.best = accuracy, run
        final = result.metrics.train_acc[..., -1]
        # The line ends with this cell's own best run: with two cells training, the sweep's best may be the other's.
        logger.info(
            f"{self.name(index)}: {final.size} runs, compile {result.trace_s + result.compile_s:.1f} s "
            f"(waited {result.wait_s:.1f} s), "
            f"train {result.train_s:.1f} s, final train acc mean {final.mean():.3f} "
            f"(min {final.min():.3f}, max {final.max():.3f}); its best: {self._accuracy_text(accuracy)}{run}"
        )

    def _best_of(self, index, result) -> tuple[float, str]:
        # Mean over seeds (axis 0) of each value-grid point's final test accuracy; a diverged run's NaN loses.
        per_point = np.nan_to_num(result.metrics.test_acc[..., -1].mean(axis=0), nan=-1.0)
        k = int(np.argmax(per_point))
        cell = self.cells[index]
        return float(per_point[k]), axes_label(cell) + values_label(self.config, cell, k, axis_names=True)

    def _accuracy_text(self, accuracy: float) -> str:
        seeds = len(self.config.sweep.seeds)
        over = "" if seeds == 1 else f" (mean of {seeds} seeds)"
        return f"test acc {accuracy:.3f}{over} at "

    def best_text(self) -> str:
        if self.best is None:
            return "best so far: no finished run yet"
        return f"best so far: {self._accuracy_text(self.best[0])}{self.best[1]}"


def axes_label(cell: Cell) -> str:
    """A cell with each static axis named, as a reader who does not know the column order needs it."""
    fields = "".join(f" {key}={value}" for key, value in cell.fields)
    return f"model={cell.model} norm={cell.norm} protocol={cell.protocol} batch={cell.batch_size}{fields}"


def values_label(config: Config, cell: Cell, k: int, axis_names: bool = False) -> str:
    """The `k`-th run of one seed of `cell`, naming only the value axes that vary within the cell, or with
    `axis_names` every value axis (a best run read on its own)."""
    values = plan(config, cell).run_values
    return "".join(f" {column}={v[k]:.3g}" for column, v in values.items() if axis_names or len(set(v)) > 1)


class LiveProgress(LogProgress):
    """A rich progress bar over the sweep's run-steps, with a status line under it; log lines scroll above.

    A cell counts its last epoch only when it is done, after its final evaluations: the bar reaches 100% once,
    when the last cell is done."""

    per_epoch = True

    def __init__(self, console):
        from rich import progress as rp
        from rich.text import Text

        super().__init__()
        self.now_training: dict[int, float] = {}  # cell index -> epochs done
        self.now_compiling: int | None = None
        self.done: set[int] = set()
        self.task = None
        status = self

        class Bar(rp.Progress):
            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                yield Text(status.status_line(), overflow="ellipsis", no_wrap=True)

        columns = (rp.SpinnerColumn(), rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
                   rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn())  # fmt: skip
        # Compiles stall the bar between cells: estimate the speed over the whole sweep, not the last 30 s.
        self.bar = Bar(*columns, console=console, speed_estimate_period=24 * 3600)

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def status_line(self) -> str:
        if self.task is None:  # drawn before the sweep has started
            return ""
        epochs = self.config.train.epochs
        parts = [f"training cell {i + 1} ({self.cells[i].label()}) epoch {done:g}/{epochs}"
                 for i, done in sorted(self.now_training.items())]  # fmt: skip
        if self.now_compiling is not None:
            parts.append(f"compiling cell {self.now_compiling + 1} ({self.cells[self.now_compiling].label()})")
        return "  ".join(parts + [self.best_text()])

    def sweep_started(self, config, cells, n_train):
        super().sweep_started(config, cells, n_train)
        self.task = self.bar.add_task(self._description(), total=sum(self.work))

    def _description(self) -> str:
        return f"{self.config.name}: {len(self.done)}/{len(self.cells)} cells done"

    def _show(self):
        epochs = self.config.train.epochs
        completed = sum(self.work[i] for i in self.done)
        completed += sum(self.work[i] * done / epochs for i, done in self.now_training.items())
        self.bar.update(self.task, completed=completed, description=self._description())

    def compiling(self, index):
        self.now_compiling = index
        self.bar.refresh()

    def training(self, index):
        self.now_training[index] = 0
        if self.now_compiling == index:
            self.now_compiling = None
        self._show()

    def epochs_done(self, index, epochs):
        # The last epoch is the cell's end, counted by `cell_done`; a late or repeated report (each device of a
        # data-parallel cell sends its own) never moves back.
        if index in self.now_training and epochs < self.config.train.epochs:
            self.now_training[index] = max(self.now_training[index], epochs)
            self._show()

    def cell_done(self, index, result):
        super().cell_done(index, result)
        self.now_training.pop(index, None)
        self.done.add(index)
        self._show()


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
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # A library may give the root logger a handler (orbax, imported by checkpointing sweeps, does), which would
    # print every line a second time as "INFO:normbench:...".
    logger.propagate = False
    try:
        with reporter if live else contextlib.nullcontext():
            yield reporter
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
