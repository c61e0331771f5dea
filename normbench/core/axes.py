"""The sweep's axes, declared once. Every part of normbench that needs to know which columns identify a run
(the metrics table, statistics, summary, figures, progress, TensorBoard, resume, compare) derives it from here.

An axis is a `metrics.csv` column, a kind and where its values come from:

- static: each value selects a compiled program (it changes shapes or structure), one `Cell` per combination;
- value: a number that a run can read as a traced value, so the whole grid of them is vmapped in one program.

Besides the built-in axes below, any scalar config field is an axis when `sweep.fields` (or `normbench run
--sweep KEY=V1,V2`) gives it values; its column is its dotted name. It is a value axis when it is listed in
`VALUE_FIELDS` (the code that reads it takes a traced value), else a static one. Making a field vmappable is
one line here, once the code that reads it does arithmetic with it and no Python branching.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from normbench.config import Config

STATIC, VALUE = "static", "value"


@dataclass(frozen=True)
class Axis:
    column: str  # its metrics.csv column
    kind: str  # STATIC or VALUE
    source: str  # where its values come from


BUILT_IN = (
    Axis("model", STATIC, "sweep.models"),
    Axis("norm", STATIC, "sweep.norms"),
    Axis("protocol", STATIC, "sweep.protocols"),
    Axis(
        "batch_size", STATIC, "sweep.batch_sizes, as the protocol uses them (the batch per device when data parallel)"
    ),
    Axis("ghost_size", VALUE, "the protocol: examples per batch statistic (each of sweep.batch_sizes under ghost)"),
    Axis("init_scale", VALUE, "sweep.init_scales"),
    Axis("seed", VALUE, "sweep.seeds (the outer vmap: a seed's runs share their minibatches)"),
    Axis("learning_rate", VALUE, "sweep.learning_rates, times SGD batch / train.lr_reference_batch when that is set"),
)

# Config fields that a run reads as traced values: sweeping one vmaps it inside one program.
VALUE_FIELDS = (
    "norm.momentum",
    "norm.epsilon",
    "norm.running_var_init",
    "train.momentum",
    "train.weight_decay",
    "train.warmup_fraction",
)

# Fields that no sweep can vary, and why.
FIXED_FIELDS = {
    "name": "it names the whole sweep",
    "figures": "they draw the whole sweep",
    "report": "it reads the whole sweep's results",
    "data": "a sweep trains on one data set",
    "sweep": "it defines the sweep; set it directly",
    "train.epochs": "every run of a sweep trains the same epochs",
    "train.precision": "float64 switches on jax_enable_x64 for the whole sweep",
    "train.chunk_size": "it only schedules the grid's computation",
    "train.chunk_min_batch": "it only schedules the grid's computation",
    "train.checkpoint_every": "it only schedules the grid's computation",
    "train.diagnostics_at": "every run records the same epochs",
    "train.data_parallel": "a sweep's devices are chosen once, before its first cell",
}

EPOCH = "epoch"  # the first column after a table's run keys


def axes(config: Config) -> tuple[Axis, ...]:
    """The built-in axes, then one per `sweep.fields` entry, in the order of the table's columns."""
    fields = config.sweep.fields
    return BUILT_IN + tuple(Axis(key, kind(key), f"sweep.fields: {', '.join(map(str, fields[key]))}") for key in fields)


def kind(field: str) -> str:
    return VALUE if field in VALUE_FIELDS else STATIC


def run_columns(config: Config) -> tuple[str, ...]:
    """The columns that identify a run of `config`, in table order."""
    return tuple(axis.column for axis in axes(config))


def key_columns(header: Iterable[str]) -> list[str]:
    """The run-identifying columns of a table written from these axes: every column before `epoch`."""
    header = list(header)
    return header[: header.index(EPOCH)]


def swept_columns(header: Iterable[str]) -> list[str]:
    """The key columns of a table that `sweep.fields` added (dotted field names)."""
    built_in = {axis.column for axis in BUILT_IN}
    return [column for column in key_columns(header) if column not in built_in]


def fixed_reason(field: str) -> str | None:
    """Why `field` cannot be swept, or None."""
    for prefix, reason in FIXED_FIELDS.items():
        if field == prefix or field.startswith(prefix + "."):
            return reason
    return None
