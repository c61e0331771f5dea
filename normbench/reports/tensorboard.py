"""TensorBoard scalars of every run, written as each cell finishes: `normbench run CONFIG --tensorboard DIR`.

Each normbench run is one TensorBoard run, `DIR/<model>_<norm>_<protocol>_b<batch>/init<scale>_lr<lr>[_ghost<n>]
/seed<seed>`, so TensorBoard's run filter selects by any of them (e.g. `batch_sgd` or `seed0`). Its scalars, at
step = epoch, are the columns of `metrics.csv` (the very values, read back from the same text): `train/loss`,
`train/acc`, `test/loss`, `test/acc`, and after the last epoch, for norms with running statistics,
`test/acc_batch_stats` and `test/acc_precise`. Each run also carries its hyperparameters, its key columns
(model, norm, protocol, batch size, init scale, learning rate, examples per statistic, seed and each swept field),
as the HParams plugin's summary, so TensorBoard's HPARAMS tab tabulates the runs against their final metrics.
Scalars come as each cell finishes, not as its epochs do: a cell's epochs run inside one compiled program, and
what it reports while running (`normbench.reports.progress`) is only the epoch index, not the metrics of its
runs, whose copy back to the host per epoch would cost more than the progress it shows.
Use a fresh DIR per sweep: a second sweep into the same runs adds a second event file to each, and TensorBoard
draws both.

Needs tensorboardX (`pip install -e ".[tensorboard]"`); viewing needs TensorBoard (`pip install tensorboard`,
then `tensorboard --logdir DIR`). A finished results directory converts the same way:
`write_scalars(DIR, read_metrics(RESULTS_DIR))`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from normbench.core.axes import STATIC, VALUE, key_columns, kind, swept_columns
from normbench.errors import UserError
from normbench.reports.progress import Progress
from normbench.results.store import metrics_csv, parse_metrics, prepare_output_dir

TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "test_loss": "test/loss",
    "test_acc": "test/acc",
    "test_acc_batch_stats": "test/acc_batch_stats",
    "test_acc_precise": "test/acc_precise",
}


def run_name(key: dict, fields: list[str]) -> str:
    """A run's TensorBoard name from its key columns (`fields`: those of swept config fields):
    `<model>_<norm>_<protocol>_b<batch>[_<static field>=<v>]`, then `init<scale>_lr<rate>[_ghost<g>]
    [_<value field>=<v>]`, then `seed<seed>`."""
    static = [f"{c}={key[c]}" for c in fields if kind(c) == STATIC]
    values = [f"{c}={key[c]:.6g}" for c in fields if kind(c) == VALUE]
    ghost = [f"ghost{key['ghost_size']}"] if key["protocol"] == "ghost" else []
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
    from tensorboardX.summary import hparams

    runs: dict[str, tuple[dict, list[int]]] = {}  # name -> (key columns, rows)
    keys, fields = key_columns(columns), swept_columns(columns)
    for i, values in enumerate(zip(*(columns[k] for k in keys))):
        key = dict(zip(keys, values))
        runs.setdefault(run_name(key, fields), (key, []))[1].append(i)
    metrics = {tag: None for tag in TAGS.values()}  # the plugin names them; the scalars below are their values
    for name, (key, rows) in runs.items():
        with SummaryWriter(logdir=str(Path(logdir) / name)) as writer:
            # Into the run's own event file (tensorboardX's add_hparams would open a timestamped subrun), so the
            # HParams tab finds the scalars next to it.
            for summary in hparams(hyperparameters(key), metrics):
                writer.file_writer.add_summary(summary)
            for i in rows:
                for column, tag in TAGS.items():
                    value = columns[column][i]
                    if not np.isnan(value):  # the extra evaluations exist at the last epoch only
                        writer.add_scalar(tag, float(value), int(columns["epoch"][i]))
    return list(runs)


class TensorBoardWriter(Progress):
    """A sweep listener that writes each cell's runs as soon as the cell is trained."""

    def __init__(self, logdir: Path):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise UserError("--tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from None
        self.logdir = Path(logdir)

    def sweep_started(self, config, cells, n_train):
        self.config = config
        prepare_output_dir(self.logdir)  # a bad DIR stops the sweep before its first cell trains

    def cell_done(self, index, result):
        write_scalars(self.logdir, parse_metrics(metrics_csv(self.config, [result])))
