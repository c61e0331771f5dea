"""An unfinished run, kept in `<results dir>/unfinished/` until the run completes:

- `config.json`: the config being run, so that a rerun can tell it is the same run;
- `cells/<index>.csv`: each finished cell's rows of `metrics.csv`, written the moment the cell finishes
  (and `diagnostics/<index>.csv`, its rows of `diagnostics.csv`, just before);
- `checkpoints/<index>/`: with `train.checkpoint_every`, the latest saved state of the cell in training (orbax).

Every file here is written atomically (orbax too renames a finished save into place), so a run stopped at any
point (Ctrl-C, SIGTERM, SIGKILL, a lost machine) leaves only whole files. Running the same command again trains
only the cells without rows, a cell with a checkpoint continues from it, and the rows of a resumed run are
the same bytes as an uninterrupted run's. The completed run writes its results into a new directory, which it
swaps for the old one (`normbench.results.store.replace`): this directory goes with the old one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np

from normbench.config import Config, to_dict
from normbench.core.train import EpochMetrics
from normbench.errors import MachineError, UserError
from normbench.results.store import CONFIG, UNFINISHED, atomic_write, config_differences, in_current_columns
from normbench.runtime.faults import reached


class Unfinished:
    """The records of the run into `out` that is under way (or was interrupted)."""

    def __init__(self, out: Path):
        self.root = Path(out) / UNFINISHED

    def begin(self, config: Config, force: bool) -> None:
        """Start a run of `config`, or continue the interrupted one if it ran the same config. `force` discards
        an interrupted run of another config instead of refusing."""
        try:
            if self.root.exists() and not (self.root / CONFIG).exists():
                shutil.rmtree(self.root)  # killed before its config was written, so before any cell: nothing to keep
            if self.root.exists():
                differing = config_differences(self.root / CONFIG, config)
                if differing and not force:
                    raise UserError(
                        f"{str(self.root)!r} holds an interrupted run of a different config (differs in "
                        f"{', '.join(differing)}); pass --force to discard it, or --out for another directory"
                    )
                if differing:
                    shutil.rmtree(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / CONFIG).exists():
                atomic_write(self.root / CONFIG, json.dumps({"config": to_dict(config)}, indent=2) + "\n")
            (self.root / "cells").mkdir(exist_ok=True)
        except OSError as e:  # a full disk, a read-only file system: nothing is trained yet, nothing lost
            if not (self.root / CONFIG).exists():  # no run began: an empty unfinished/ would mark `out` unfinished
                shutil.rmtree(self.root, ignore_errors=True)
            raise MachineError(
                f"cannot start the run in {str(self.root)!r}: {e.strerror or e}; make room and run it again"
            ) from e

    def finished(self) -> dict[int, str]:
        """Cell index -> that cell's rows (with the header line) for every cell finished so far; a cell kept before
        metrics.csv gained a column has it as NaN (`in_current_columns`), so that every cell's table joins."""
        cells = sorted((self.root / "cells").glob("*.csv"))
        return {int(path.stem): in_current_columns(path.read_text()) for path in cells}

    def finished_diagnostics(self) -> dict[int, str]:
        return {int(path.stem): path.read_text() for path in sorted((self.root / "diagnostics").glob("*.csv"))}

    def record(self, index: int, rows: str, diagnostics: str | None = None) -> None:
        """Keep a finished cell: its layer diagnostics' rows first, since its metrics rows mark it finished."""
        if diagnostics is not None:
            (self.root / "diagnostics").mkdir(exist_ok=True)
            atomic_write(self.root / "diagnostics" / f"{index:04d}.csv", diagnostics)
        atomic_write(self.root / "cells" / f"{index:04d}.csv", rows)
        shutil.rmtree(self.root / "checkpoints" / f"{index:04d}", ignore_errors=True)

    def checkpoints(self, index: int) -> CellCheckpoints:
        return CellCheckpoints(self.root / "checkpoints" / f"{index:04d}")


class CellCheckpoints:
    """The latest state of one cell in training: its vmapped `RunState` and the epochs' metrics so far."""

    def __init__(self, directory: Path):
        import orbax.checkpoint as ocp  # only sweeps that checkpoint pay for its import

        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def save(self, epoch: int, state, per_epoch: list[EpochMetrics], diagnostics: dict) -> None:
        metrics = jax.tree.map(lambda *parts: np.concatenate(parts, axis=-1), *per_epoch)
        tree = {"state": state, "metrics": metrics, "diagnostics": {str(e): d for e, d in diagnostics.items()}}
        self._manager.save(epoch, args=self._ocp.args.StandardSave(tree))
        reached("checkpoint")

    def latest(self, fresh_state, diagnostics_shape, diagnostics_at: tuple[int, ...]):
        """(epoch, state, [metrics so far], {epoch: diagnostics so far}) from the latest save, or None;
        `fresh_state` and `diagnostics_shape` give the structures to restore."""
        epoch = self._manager.latest_step()
        if epoch is None:
            return None
        like = jax.ShapeDtypeStruct
        state_like = jax.tree.map(lambda x: like(x.shape, x.dtype), fresh_state)
        runs = fresh_state.diverged_epoch.shape
        metrics_like = EpochMetrics(*(like((*runs, epoch), np.float32) for _ in EpochMetrics._fields))
        diagnosed = {str(e): diagnostics_shape for e in diagnostics_at if e <= epoch}
        target = {"state": state_like, "metrics": metrics_like, "diagnostics": diagnosed}
        restored = self._manager.restore(epoch, args=self._ocp.args.StandardRestore(target))
        diagnostics = {int(e): d for e, d in restored["diagnostics"].items()}
        return epoch, restored["state"], [restored["metrics"]], diagnostics
