"""A sweep: one compiled program per `Cell` (static axes), every value-axis run of that cell vmapped inside it."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import numpy as np

from normbench.config import Cell, Config, ConfigError, cells, value_grid
from normbench.data import Dataset
from normbench.norms import NORMS
from normbench.train import Data, Metrics, RunValues, make_train, steps_per_epoch


@dataclass
class CellResult:
    cell: Cell
    metrics: Metrics  # numpy, leading axes (seed, run) in `value_grid` order
    compile_s: float  # how long compiling took
    wait_s: float  # how much of it the sweep waited for (the rest overlapped the previous cell's training)
    train_s: float


def grid_values(config: Config, cell: Cell) -> tuple[np.ndarray, RunValues]:
    """The seeds (outer vmap axis) and the other values of one seed's runs (inner vmap axis)."""
    scales, lrs, ghosts = zip(*value_grid(config, cell))
    values = RunValues(np.asarray(scales, np.float32), np.asarray(lrs, np.float32), np.asarray(ghosts, np.int32))
    return np.asarray(config.sweep.seeds, np.uint32), values


def check_fits(config: Config, dataset: Dataset) -> None:
    """Reject batch shapes the data cannot fill, before anything is compiled."""
    n, n_test = len(dataset.train_x), len(dataset.test_x)
    for cell in cells(config):
        if cell.batch_size > n:
            raise ConfigError(
                f"batch size {cell.batch_size} is larger than the {n} training examples of {dataset.name}"
            )
        if NORMS[cell.norm].running_stats and cell.batch_size > n_test:
            raise ConfigError(
                f"batch size {cell.batch_size} is larger than the {n_test} test examples of {dataset.name}, "
                f"which {cell.norm} norm's batch-statistics evaluation needs"
            )
        needed = steps_per_epoch(config, cell, n) * cell.batch_size
        if config.train.sampling == "permutation" and needed > n:
            raise ConfigError(
                f"train.steps_per_epoch={config.train.steps_per_epoch} at batch {cell.batch_size} needs "
                f"{needed} examples per epoch without repeats, but there are {n}; lower it or use "
                f"train.sampling=replacement"
            )


def device_data(dataset: Dataset) -> Data:
    return Data(*(jax.device_put(a) for a in (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y)))


def vmap_grid(train, chunk_size: int | None = None):
    """(seeds [S], values [K], data) -> results [S, K]: the seed outside, so minibatches are shared inside.
    With `chunk_size`, seeds go through in slices of that many (`lax.map`), each slice vmapped."""
    per_seed = jax.vmap(train, in_axes=(None, 0, None))
    if chunk_size is None:
        return jax.vmap(per_seed, in_axes=(0, None, None))
    return lambda seeds, values, data: jax.lax.map(lambda s: per_seed(s, values, data), seeds, batch_size=chunk_size)


def compile_cell(config: Config, cell: Cell, dataset: Dataset, data: Data, seeds, values: RunValues):
    """The compiled grid of one cell; its vmaps reach only the value axes."""
    train = make_train(config, cell, dataset.num_classes, len(dataset.train_x))
    return jax.jit(vmap_grid(train, config.train.chunk_size)).lower(seeds, values, data).compile()


def train_cell(config: Config, cell: Cell, dataset: Dataset, data: Data, seeds, values: RunValues):
    """Compile and train one cell; returns the final states and its `CellResult`."""
    start = time.perf_counter()
    compiled = compile_cell(config, cell, dataset, data, seeds, values)
    compile_s = time.perf_counter() - start
    return _train(compiled, cell, data, seeds, values, compile_s, wait_s=compile_s)


def _train(compiled, cell: Cell, data: Data, seeds, values: RunValues, compile_s: float, wait_s: float):
    start = time.perf_counter()
    states, metrics = jax.block_until_ready(compiled(seeds, values, data))
    train_s = time.perf_counter() - start
    return states, CellResult(cell, jax.tree.map(np.asarray, metrics), compile_s, wait_s, train_s)


def run_sweep(config: Config, dataset: Dataset, log: Callable[[str], None] = print) -> list[CellResult]:
    """Train every cell in turn. XLA compiles a program on one core, so the next cell compiles in a background
    thread while a cell trains; a cell waits only for what that overlap did not cover. (A second compile thread
    gained nothing on 2 cores: see the closing note of the small-batch issue.)"""
    check_fits(config, dataset)
    data = device_data(dataset)
    todo = cells(config)
    results = []

    def compile_timed(cell):
        start = time.perf_counter()
        compiled = compile_cell(config, cell, dataset, data, *grid_values(config, cell))
        return compiled, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=1) as compiler:
        pending = compiler.submit(compile_timed, todo[0])
        for i, cell in enumerate(todo):
            waited = time.perf_counter()
            compiled, compile_s = pending.result()
            waited = time.perf_counter() - waited
            if i + 1 < len(todo):
                pending = compiler.submit(compile_timed, todo[i + 1])
            _, result = _train(compiled, cell, data, *grid_values(config, cell), compile_s, waited)
            results.append(result)
            final = result.metrics.train_acc[..., -1]
            log(
                f"cell {i + 1}/{len(todo)} {cell.model} {cell.norm} {cell.protocol} batch={cell.batch_size}: "
                f"{final.size} runs, compile {compile_s:.1f} s (waited {waited:.1f} s), train {result.train_s:.1f} s, "
                f"final train acc mean {final.mean():.3f} (min {final.min():.3f}, max {final.max():.3f})"
            )
    return results
