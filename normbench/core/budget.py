"""What a sweep will cost, estimated from traced shapes before anything is compiled: its peak memory, which `run`
checks against the memory available, and its work as a count of run-steps (not seconds: no rate is measured).

Per run: the bytes of its `RunState` (`jax.eval_shape` of `Training.start`) plus every intermediate value of
one training epoch's program (the outputs of each operation in its jaxpr, a loop's body once): activations,
gradients, optimizer updates, the gathered minibatch. XLA reuses buffers, so the sum is an upper bound on what
one run holds at once. A cell holds all its runs; the data is shared. Cells that differ only in batch size are
traced once, at their largest batch, whose intermediates bound the others'.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import jax
import numpy as np

from normbench.config import Config, ConfigError
from normbench.core.grid import Cell, cells, grid_arrays, run_count, run_steps
from normbench.core.sweep import vmap_grid
from normbench.core.train import PRECISIONS, Data, make_training, precision_scope
from normbench.data import Dataset
from normbench.models import MODELS
from normbench.norms import NORMS
from normbench.protocols import PROTOCOLS
from normbench.runtime.cache import cache_dir, keep
from normbench.runtime.programs import program_key

MIB = 2**20
# The share of physical memory a sweep may plan for on a CPU: the rest is the OS's, Python's and XLA's own.
CPU_SHARE = 0.8
SINGLE_DEVICE = "sgd"  # the protocol whose one-device cell a data-parallel cell's devices each resemble


@dataclass(frozen=True)
class Estimate:
    cell_bytes: tuple[int, ...]  # each cell's runs: their states and one epoch's intermediates
    data_bytes: int
    workers: int  # cells training at once
    run_steps: int  # training steps summed over every run of the sweep

    @property
    def peak_bytes(self) -> int:
        return self.data_bytes + sum(sorted(self.cell_bytes, reverse=True)[: self.workers])

    def text(self) -> str:
        at_once = min(self.workers, len(self.cell_bytes))
        cells = "cell" if at_once == 1 else f"{at_once} cells"
        return (
            f"about {self.peak_bytes / MIB:,.0f} MiB for the largest {cells} training at once; "
            f"{self.run_steps:,} run-steps in all"
        )


def estimate(config: Config, dataset: Dataset, workers: int) -> Estimate:
    """The memory and work of training `config`'s cells on `dataset`, `workers` cells at a time. Tracing the cells
    for it takes a second or two, every run of a study: the numbers are kept in the program cache
    (`normbench.runtime.programs`), under a key of all they depend on."""
    specs = tuple(
        {id(spec): spec for cell in cells(config) for spec in (NORMS[cell.norm], MODELS[cell.model])}.values()
    )
    key = program_key(config, "estimate", specs, (dataset.num_classes, _arrays(dataset)))
    path = None if key is None else cache_dir() / "estimates" / f"{key}.json"
    try:
        kept = json.loads(path.read_text())
        return Estimate(tuple(kept["cell_bytes"]), kept["data_bytes"], workers, kept["run_steps"])
    except (AttributeError, OSError, ValueError, KeyError, TypeError):  # none kept, or not a sound entry
        pass
    with precision_scope(config.train.precision):
        cost = _estimate(config, dataset, workers)
    if path is not None:
        kept = {"cell_bytes": list(cost.cell_bytes), "data_bytes": cost.data_bytes, "run_steps": cost.run_steps}
        keep(path, json.dumps(kept).encode())
    return cost


def _estimate(config: Config, dataset: Dataset, workers: int) -> Estimate:
    n_train = len(dataset.train_x)
    dtype = PRECISIONS[config.train.precision]
    data = Data(*(jax.ShapeDtypeStruct(a.shape, dtype if a.dtype.kind == "f" else a.dtype) for a in _arrays(dataset)))
    all_cells = cells(config)
    largest: dict[tuple, Cell] = {}
    for cell in all_cells:
        group = (cell.model, cell.norm, cell.protocol, cell.fields)
        if group not in largest or cell.batch_size > largest[group].batch_size:
            largest[group] = cell
    per_run = {group: _run_bytes(config, cell, dataset, data) for group, cell in largest.items()}
    cell_bytes, steps = [], 0
    for cell in all_cells:
        runs = run_count(config, cell)
        each, shared = per_run[cell.model, cell.norm, cell.protocol, cell.fields]
        cell_bytes.append(runs * each + shared)
        steps += runs * run_steps(config, cell, n_train)
    return Estimate(tuple(cell_bytes), sum(a.nbytes for a in _arrays(dataset)), workers, steps)


def check_memory(estimate: Estimate, available: int | None = None) -> None:
    """Refuse a sweep whose estimate exceeds the memory available (default: `available_bytes()`)."""
    limit = available_bytes() if available is None else available
    if limit is not None and estimate.peak_bytes > limit:
        raise ConfigError(
            f"the sweep needs {estimate.text().split(';')[0]}, more than the {limit / MIB:,.0f} MiB available; "
            "fewer runs (seeds, value-axis values), a smaller batch, --workers 1 or train.chunk_size would shrink "
            "it, or pass --no-size-check to run it anyway"
        )


def available_bytes() -> int | None:
    """The device's memory limit where it reports one, else (a CPU) a share of physical memory; None if neither."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return int(CPU_SHARE * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return None


def _arrays(dataset: Dataset) -> tuple[np.ndarray, ...]:
    return dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y, *dataset.validation()


def _run_bytes(config: Config, cell: Cell, dataset: Dataset, data: Data) -> tuple[int, int]:
    """(bytes per run, bytes shared by the runs) of `cell`: a grid traced at one run and at two, since an
    operation on the shared data alone (the evaluation's padding of a split) is not repeated per run."""
    if PROTOCOLS[cell.protocol].split(config).axis is not None:
        # Each device holds every run with its share of the batch, the memory of a one-device cell at that batch.
        cell = dataclasses.replace(cell, protocol=SINGLE_DEVICE)
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    _, values = grid_arrays(config, cell)
    totals = []
    for runs in (1, 2):
        seeds = jax.ShapeDtypeStruct((1,), np.uint32)
        grid = {key: jax.ShapeDtypeStruct((runs,), v.dtype) for key, v in values.items()}
        state = jax.eval_shape(vmap_grid(training.start), seeds, grid, data)
        epoch = vmap_grid(lambda s, v, d, st: training.epochs(s, v, d, st, 0, count=1), per_run=(True,))
        totals.append(_peak_bytes(jax.make_jaxpr(epoch)(seeds, grid, data, state).jaxpr))
    return totals[1] - totals[0], 2 * totals[0] - totals[1]


def _peak_bytes(jaxpr) -> int:
    """The most bytes live at once while `jaxpr` runs in order, each value freed after its last use; a call or
    loop adds its body's own peak at that point (a loop's body once: its iterations reuse the memory)."""
    last_use = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jax.extend.core.Var):
                last_use[v] = i
    for v in jaxpr.outvars:
        if isinstance(v, jax.extend.core.Var):
            last_use[v] = len(jaxpr.eqns)
    live = sum(_var_bytes(v) for v in (*jaxpr.invars, *jaxpr.constvars))
    peak = live
    for i, eqn in enumerate(jaxpr.eqns):
        inner = max((_peak_bytes(sub) for sub in _sub_jaxprs(eqn)), default=0)
        live += sum(_var_bytes(v) for v in eqn.outvars)
        peak = max(peak, live + inner)
        dying = {
            v for v in (*eqn.invars, *eqn.outvars) if isinstance(v, jax.extend.core.Var) and last_use.get(v, i) <= i
        }
        live -= sum(map(_var_bytes, dying))
    return peak


def _var_bytes(v) -> int:
    aval = v.aval
    return math.prod(aval.shape) * aval.dtype.itemsize if hasattr(aval, "shape") else 0


def _sub_jaxprs(eqn):
    for param in eqn.params.values():
        for sub in param if isinstance(param, tuple) else (param,):
            inner = getattr(sub, "jaxpr", sub)
            if isinstance(inner, jax.extend.core.Jaxpr):
                yield inner
