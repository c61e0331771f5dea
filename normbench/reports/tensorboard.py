"""TensorBoard scalars of every run, written as its epochs finish: `normbench run CONFIG --tensorboard DIR`.

Each normbench run is one TensorBoard run, `DIR/<model>_<norm>_<protocol>_b<batch>/init<scale>_lr<lr>[_ghost<n>]
/seed<seed>`, so TensorBoard's run filter selects by any of them (e.g. `batch_sgd` or `seed0`). Its scalars, at
step = epoch, are the columns of `metrics.csv` (the same values, rounded to the same 7 digits): `train/loss`,
`train/acc`, `test/loss`, `test/acc`, and after the last epoch, for norms with running statistics,
`test/acc_batch_stats` and `test/acc_precise`. Each run also carries its hyperparameters, its key columns
(model, norm, protocol, batch size, init scale, learning rate, examples per statistic, seed and each swept field),
as the HParams plugin's summary, so TensorBoard's HPARAMS tab tabulates the runs against their final metrics.

The per-epoch scalars are written as each epoch ends: a cell trains epoch by epoch on one device, and the host
takes that epoch's metrics of the whole grid between its epoch programs (over several devices, one host callback
per epoch carries them, `normbench.core.train.grid_callback`), and each run's event file is flushed then, so
TensorBoard draws a cell's curves while it trains. The after-training ones, and the epochs of a cell resumed from
a checkpoint that ran before the interruption, are written when the cell ends (`normbench.reports.progress`).
Use a fresh DIR per sweep: a second sweep into the same runs adds a second event file to each, and TensorBoard
draws both.

Needs tensorboardX (`pip install -e ".[tensorboard]"`); viewing needs TensorBoard (`pip install tensorboard`,
then `tensorboard --logdir DIR`). A finished results directory converts the same way:
`write_scalars(DIR, read_metrics(RESULTS_DIR))`.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import numpy as np

from normbench.core.axes import EPOCH, STATIC, VALUE, key_columns, kind, run_columns, swept_columns
from normbench.core.grid import plan
from normbench.core.train import EpochMetrics
from normbench.errors import UserError, refused_write
from normbench.protocols import PROTOCOLS
from normbench.reports.progress import Progress
from normbench.results.store import AFTER_TRAINING, check_writable
from normbench.results.table import number

TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "test_loss": "test/loss",
    "test_acc": "test/acc",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "test_acc_batch_stats": "test/acc_batch_stats",
    "test_acc_precise": "test/acc_precise",
    "train_acc_batch_stats": "train/acc_batch_stats",
    "test_acc_example_weighted": "test/acc_example_weighted",
    "landscape_loss_min": "landscape/loss_min",
    "landscape_loss_range": "landscape/loss_range",
    "landscape_grad_change_min": "landscape/grad_change_min",
    "landscape_grad_change_max": "landscape/grad_change_max",
    "landscape_beta": "landscape/beta",
}


def run_name(key: dict, fields: list[str]) -> str:
    """A run's TensorBoard name from its key columns (`fields`: those of swept config fields):
    `<model>_<norm>_<protocol>_b<batch>[_<static field>=<v>]`, then `init<scale>_lr<rate>[_ghost<g>]
    [_<value field>=<v>]`, then `seed<seed>`."""
    static = [f"{c}={key[c]}" for c in fields if kind(c) == STATIC]
    values = [f"{c}={key[c]:.6g}" for c in fields if kind(c) == VALUE]
    ghost = [f"ghost{key['ghost_size']}"] if PROTOCOLS[key["protocol"]].statistic_axis else []
    cell = "_".join([key["model"], key["norm"], key["protocol"], f"b{key['batch_size']}", *static])
    run = "_".join([f"init{key['init_scale']:.6g}", f"lr{key['learning_rate']:.6g}", *ghost, *values])
    return f"{cell}/{run}/seed{key['seed']}"


def hyperparameters(key: dict) -> dict[str, str | float]:
    """A run's key columns as the HParams plugin takes them: strings and Python numbers."""
    return {column: value.item() if isinstance(value, np.generic) else value for column, value in key.items()}


def write_scalars(logdir: Path, columns: dict[str, np.ndarray]) -> list[str]:
    """Write every run of a metrics table (`read_metrics`' columns) under `logdir`, with its hyperparameters;
    returns the run names."""
    from tensorboardX import SummaryWriter

    runs: dict[str, tuple[dict, list[int]]] = {}  # name -> (key columns, rows)
    keys, fields = key_columns(columns), swept_columns(columns)
    for i, values in enumerate(zip(*(columns[k] for k in keys))):
        key = dict(zip(keys, values))
        runs.setdefault(run_name(key, fields), (key, []))[1].append(i)
    for name, (key, rows) in runs.items():
        with SummaryWriter(logdir=str(Path(logdir) / name)) as writer:
            for summary in hparams_summaries(key):
                writer.file_writer.add_summary(summary)
            for i in rows:
                for column, tag in TAGS.items():
                    value = columns[column][i] if column in columns else np.nan  # landscape_*: only when probed
                    if not np.isnan(value):  # the extra evaluations exist at the last epoch only
                        writer.add_scalar(tag, float(value), int(columns["epoch"][i]))
    return list(runs)


def hparams_summaries(key: dict) -> list:
    """A run's hyperparameters as the HParams plugin's summaries, for the run's own event file (tensorboardX's
    add_hparams would open a timestamped subrun), so the HParams tab finds the scalars next to them."""
    from tensorboardX.summary import hparams

    metrics = {tag: None for tag in TAGS.values()}  # the plugin names them; the scalars are their values
    return list(hparams(hyperparameters(key), metrics))


class EventFile:
    """One run's event file, written as events come: `flush` makes them readable by TensorBoard at once.
    (tensorboardX's SummaryWriter queues them for a thread per file, and its flush leaves the queue waiting.)"""

    def __init__(self, directory: Path):
        from tensorboardX.proto.event_pb2 import Event

        self._event = Event
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._file = open(Path(directory) / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}", "wb")
        self._add(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _add(self, event) -> None:
        from tensorboardX.record_writer import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        crc = struct.pack("<I", masked_crc32c(header)), struct.pack("<I", masked_crc32c(data))
        self._file.write(header + crc[0] + data + crc[1])

    def summary(self, summary, step: int = 0) -> None:
        self._add(self._event(wall_time=time.time(), step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        self.summary(scalar(tag, value), step)

    def flush(self) -> None:
        self._file.flush()  # to the OS, where readers find it; no fsync per epoch

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter(Progress):
    """A sweep listener that writes each run's scalars as its epochs end (`epoch_metrics`), and what is left
    when its cell is done. A cell's runs keep their event files open while it trains."""

    epoch_metrics_wanted = True

    def __init__(self, logdir: Path):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise UserError("--tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from None
        self.logdir = Path(logdir)

    def prepare(self):
        try:
            check_writable(self.logdir)  # the runs' event files make it (`EventFile`)
        except OSError as e:
            raise refused_write(f"cannot write to the TensorBoard directory {str(self.logdir)!r}", e) from e

    def sweep_started(self, config, cells, n_train):
        self.config, self.cells = config, cells
        self.fields = swept_columns([*run_columns(config), EPOCH])
        self.open: dict[int, dict[str, object]] = {}  # cell index -> run name -> its SummaryWriter
        self.written: dict[str, set[int]] = {}  # run name -> the epochs whose scalars it has

    def _runs(self, index: int, seeds) -> list[list[tuple[str, dict]]]:
        """[seed position][run] -> (run name, key columns) of `seeds` of cell `index`."""
        keys = plan(self.config, self.cells[index]).keys()
        per_seed = len(keys) // len(self.config.sweep.seeds)
        position = {seed: s for s, seed in enumerate(self.config.sweep.seeds)}
        runs = []
        for seed in seeds:
            first = position[int(seed)] * per_seed
            runs.append([(run_name(key, self.fields), key) for key in keys[first : first + per_seed]])
        return runs

    def _writer(self, index: int, name: str, key: dict) -> EventFile:
        cell = self.open.setdefault(index, {})
        if name not in cell:
            cell[name] = EventFile(self.logdir / name)
            for summary in hparams_summaries(key):
                cell[name].summary(summary)
        return cell[name]

    def _epoch(self, writer, name: str, epoch: int, metrics, s: int, k: int, last: int | None = None) -> None:
        """Epoch `epoch`'s scalars of run (s, k): `metrics` of that epoch, or of all epochs with `last` its index."""
        for column in EpochMetrics._fields:
            value = getattr(metrics, column)[s, k] if last is None else getattr(metrics, column)[s, k, last]
            if not np.isnan(value):  # e.g. test metrics of epochs without a test pass
                writer.scalar(TAGS[column], float(number(value)), epoch)
        self.written.setdefault(name, set()).add(epoch)

    def epoch_metrics(self, index, epoch, seeds, metrics):
        for s, runs in enumerate(self._runs(index, seeds)):
            for k, (name, key) in enumerate(runs):
                writer = self._writer(index, name, key)
                self._epoch(writer, name, epoch, metrics, s, k)
                writer.flush()  # readable now, while the cell trains

    def cell_done(self, index, result):
        m = result.metrics
        epochs = m.train_loss.shape[-1]
        for s, runs in enumerate(self._runs(index, self.config.sweep.seeds)):
            for k, (name, key) in enumerate(runs):
                writer = self._writer(index, name, key)
                for epoch in set(range(1, epochs + 1)) - self.written.get(name, set()):  # not heard while training
                    self._epoch(writer, name, epoch, m, s, k, last=epoch - 1)
                for column in AFTER_TRAINING:
                    value = getattr(m, column)[s, k]
                    if not np.isnan(value):
                        writer.scalar(TAGS[column], float(number(value)), epochs)
        for writer in self.open.pop(index, {}).values():
            writer.close()
