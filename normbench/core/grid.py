"""A sweep's grid: its cells (static axes, one compiled program each) and each cell's runs (value axes,
vmapped), from the axes of `normbench.core.axes` and the protocols of `normbench.protocols`.

A cell's runs form a (seed, run) grid: seeds are the outer vmap, since a seed alone decides the minibatches;
the other value axes' product, in `CellPlan.values` order, is the inner one. Rows of every results table follow
that order, cell after cell.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from normbench.config import Config, replace_field
from normbench.core.axes import STATIC, VALUE, kind, run_columns
from normbench.norms import NORMS
from normbench.protocols import PROTOCOLS


@dataclass(frozen=True)
class Cell:
    """One point of the static axes: one compiled program."""

    model: str
    norm: str
    protocol: str
    batch_size: int  # the SGD batch; the batch per device under the data-parallel protocols
    fields: tuple[tuple[str, Any], ...] = ()  # the static `sweep.fields` at this cell: (dotted name, value)
    # None: every point of the value axes. Else the points to train, each as (column, value) pairs of the axes it
    # fixes: a tuning extension (`normbench.results.tuning`) trains a new value only where a choice called for it.
    only: tuple[tuple[tuple[str, Any], ...], ...] | None = None

    def label(self) -> str:
        return " ".join([self.model, self.norm, self.protocol, f"batch={self.batch_size}",
                         *(f"{key}={value}" for key, value in self.fields)])  # fmt: skip


def swept(config: Config, of_kind: str) -> dict[str, tuple]:
    """The `sweep.fields` entries of one kind, STATIC or VALUE."""
    return {key: values for key, values in config.sweep.fields.items() if kind(key) == of_kind}


def cells(config: Config) -> list[Cell]:
    sweep = config.sweep
    static = swept(config, STATIC)
    out = []
    for model, norm, name, *values in itertools.product(sweep.models, sweep.norms, sweep.protocols, *static.values()):
        protocol = PROTOCOLS[name]
        if protocol.batch_dependent_only and not NORMS[norm].batch_dependent:
            continue
        fields = tuple(zip(static, values))
        out += [Cell(model, norm, name, b, fields) for b in protocol.cell_batches(sweep.batch_sizes)]
    return out


def with_values(config: Config, values: dict) -> Config:
    """`config` as one run reads it: its swept value fields set to that run's (traced) values."""
    for key in swept(config, VALUE):
        config = replace_field(config, key, values[key])
    return config


@dataclass(frozen=True)
class Steps:
    """A cell's SGD steps over a training set of a given size (`CellPlan.steps`)."""

    per_pass: int  # the whole SGD batches that one pass over the training set holds
    per_epoch: int
    per_run: int  # over all the run's epochs


@dataclass(frozen=True)
class CellPlan:
    """One cell resolved once, for every consumer that reads it: its config, batch, statistic sizes and runs."""

    cell: Cell
    config: Config  # as the cell runs it: its static swept fields set
    sgd_batch: int  # the examples of one SGD step: the data-parallel protocols' batch is on every device
    # The examples one batch statistic sees, per value of the protocol's axis (`ghost_size`). A norm without batch
    # statistics reads none of them, so it runs once, at the largest (under `ghost`, the SGD batch): runs at the
    # others would repeat it bit for bit.
    stat_sizes: tuple[int, ...]
    seeds: tuple[int, ...]  # the outer vmap axis
    # Each value axis's value at every run of one seed, in row order (the inner vmap axis): (column, values) pairs.
    values: tuple[tuple[str, tuple], ...]
    columns: tuple[str, ...]  # the columns that identify a run (`normbench.core.axes.run_columns`)

    @property
    def run_values(self) -> dict[str, tuple]:
        return dict(self.values)

    @property
    def run_count(self) -> int:
        """How many runs the cell trains: its seeds times its points of the other value axes."""
        return len(self.seeds) * len(self.values[0][1])

    @property
    def chunk_size(self) -> int | None:
        """How many seeds one pass of the compiled grid vmaps together (`train.chunk_size`); None: every seed, as
        always below `train.chunk_min_batch`."""
        train = self.config.train
        return train.chunk_size if self.cell.batch_size >= train.chunk_min_batch else None

    @property
    def runs_at_once(self) -> int:
        """How many runs one pass of the compiled grid vmaps together: all of them, or a chunk's."""
        return min(self.chunk_size or len(self.seeds), len(self.seeds)) * len(self.values[0][1])

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The seeds and each value axis over one seed's runs, as the arrays the vmapped grid reads."""
        values = {column: np.asarray(v, np.int32 if column == "ghost_size" else np.float32)
                  for column, v in self.values}  # fmt: skip
        return np.asarray(self.seeds, np.uint32), values

    def keys(self) -> list[dict[str, Any]]:
        """Every run as its run-column values, seed-major as the grid: the rows' identities."""
        cell = self.cell
        static = {"model": cell.model, "norm": cell.norm, "protocol": cell.protocol, "batch_size": cell.batch_size,
                  **dict(cell.fields)}  # fmt: skip
        points = [dict(zip(self.run_values, point)) for point in zip(*self.run_values.values())]
        return [{column: {**static, **point, "seed": seed}[column] for column in self.columns}
                for seed in self.seeds for point in points]  # fmt: skip

    def steps(self, n_train: int) -> Steps:
        train = self.config.train
        per_pass = n_train // self.sgd_batch
        per_epoch = _steps_per_epoch(train, per_pass)
        return Steps(per_pass, per_epoch, (train.first_epoch_steps or per_epoch) + (train.epochs - 1) * per_epoch)


def plan(config: Config, cell: Cell) -> CellPlan:
    """`cell` of the sweep `config` resolved for every consumer: what runs, and with which values."""
    run = config
    for key, value in cell.fields:
        run = replace_field(run, key, value)
    batch = cell.batch_size * PROTOCOLS[cell.protocol].split(run).devices
    sizes = tuple(PROTOCOLS[cell.protocol].stat_sizes(run, cell.batch_size))
    sizes = sizes if NORMS[cell.norm].batch_dependent else (max(sizes),)
    reference = run.train.lr_reference_batch
    values = _run_values(config, cell, batch / reference if reference else 1.0, sizes)
    return CellPlan(cell, run, batch, sizes, tuple(config.sweep.seeds), values, run_columns(config))


def _steps_per_epoch(train, per_pass: int) -> int:
    if train.steps_per_epoch:
        return train.steps_per_epoch
    if train.min_steps is None or not per_pass:  # no pass fits: `check_fits` refuses the batch
        return per_pass
    return per_pass * max(1, -(-train.min_steps // (train.epochs * per_pass)))


def unread_fields(config: Config, norm: str) -> dict[str, Any]:
    """The swept value fields that `norm` never reads (a `norm.` option that its `NormSpec.options` lacks, as
    `normbench list norms` shows), each with its first value: its cells run each of them at that value alone, which
    their column holds, since runs at the others would repeat it bit for bit (as `stat_sizes` does for `ghost_size`)."""
    options = NORMS[norm].options
    return {key: values[0] for key, values in swept(config, VALUE).items()
            if key.startswith("norm.") and key.removeprefix("norm.") not in options}  # fmt: skip


def _run_values(config: Config, cell: Cell, lr_scale: float, stat_sizes: tuple[int, ...]):
    """`CellPlan.values`. The learning rate is the one the run uses, after linear scaling with the SGD batch;
    `ghost_size` the number of examples its norms' batch statistics see; a swept field that the cell's norm never
    reads, its first value alone (`unread_fields`)."""
    unread = unread_fields(config, cell.norm)
    axes = {
        "init_scale": config.sweep.init_scales,
        "learning_rate": [lr * lr_scale for lr in config.sweep.learning_rates],
        "ghost_size": stat_sizes,
        **{key: (unread[key],) if key in unread else values for key, values in swept(config, VALUE).items()},
    }
    points = list(itertools.product(*axes.values()))
    if cell.only is not None:
        index = {column: i for i, column in enumerate(axes)}
        points = [p for p in points if any(all(p[index[c]] == v for c, v in entry) for entry in cell.only)]
    return tuple((column, tuple(point[i] for point in points)) for i, column in enumerate(axes))
