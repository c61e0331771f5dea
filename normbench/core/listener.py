"""The listener a sweep tells its events to (`normbench.core.sweep.run_sweep`), ignoring them all by default: the
sweep knows nothing of how they are shown. `normbench.reports.progress` shows them (log lines, a live bar) and
explains the events."""

from __future__ import annotations

from normbench.config import Config
from normbench.core.grid import Cell


class Progress:
    """A listener to a sweep's events; every event is ignored unless a subclass overrides it."""

    per_epoch = False  # hear every epoch even from a program over several devices (`normbench.reports.progress`)
    epoch_metrics_wanted = False  # each epoch's metrics of every run as the epoch ends

    def prepare(self) -> None:
        """Check what the listener writes to, if anything, creating nothing: `normbench.study.claim` calls it
        before it creates the output directory, so a bad path stops the run in one line and leaves nothing behind."""

    def sweep_started(self, config: Config, cells: list[Cell], n_train: int) -> None:
        pass

    def compiling(self, index: int) -> None:
        pass

    def training(self, index: int) -> None:
        pass

    def epochs_done(self, index: int, epochs: float) -> None:
        """Cell `index` has trained `epochs` epochs so far (of `config.train.epochs`); a fraction when its seeds
        train in chunks."""

    def epoch_metrics(self, index: int, epoch: int, seeds, metrics) -> None:
        """Cell `index` has finished epoch `epoch` (1-based) for the runs of `seeds` (the cell's seeds, or one
        chunk's): `metrics`, a `normbench.core.train.EpochMetrics` of numpy arrays [len(seeds), runs per seed]."""

    def cell_done(self, index: int, result) -> None:
        """Cell `index` is trained; `result` is its `normbench.core.sweep.CellResult`."""
