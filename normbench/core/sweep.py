"""A sweep: one compiled program per `Cell` (static axes), every value-axis run of that cell vmapped inside it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import Cell, Config, ConfigError, cells, sgd_batch, stat_batch, value_grid
from normbench.data import Dataset
from normbench.core.diagnostics import Diagnostics
from normbench.models import MODELS
from normbench.norms import NORMS
from normbench.runtime.parallel import check_devices, lower_grid, replicate
from normbench.runtime.programs import program_key
from normbench.reports.progress import LogProgress, Progress
from normbench.core.train import Data, Metrics, RunValues, TrainState, make_training, metrics, steps_per_epoch


@dataclass
class CellResult:
    cell: Cell
    metrics: Metrics  # numpy, leading axes (seed, run) in `value_grid` order
    trace_s: float  # tracing and lowering the program to XLA
    compile_s: float  # XLA's compilation of it
    wait_s: float  # how long its trainer waited for it (the rest of compiling overlapped other cells' training)
    train_s: float
    diagnostics: dict[int, Diagnostics] = field(default_factory=dict)  # numpy, as `CellOutput.diagnostics`
    trained_from: float = 0.0  # time.perf_counter() when its training started and ended: cells train side by side
    trained_until: float = 0.0


def training_time(results: list[CellResult]) -> float:
    """Wall-clock seconds in which at least one of the cells was training."""
    total, end = 0.0, float("-inf")
    for r in sorted(results, key=lambda r: r.trained_from):
        total += max(0.0, r.trained_until - max(r.trained_from, end))
        end = max(end, r.trained_until)
    return total


def grid_values(config: Config, cell: Cell) -> tuple[np.ndarray, RunValues]:
    """The seeds (outer vmap axis) and the other values of one seed's runs (inner vmap axis)."""
    scales, lrs, ghosts = zip(*value_grid(config, cell))
    values = RunValues(np.asarray(scales, np.float32), np.asarray(lrs, np.float32), np.asarray(ghosts, np.int32))
    return np.asarray(config.sweep.seeds, np.uint32), values


def check_fits(config: Config, dataset: Dataset) -> None:
    """Reject batch shapes the data cannot fill, before anything is compiled."""
    n, n_test = len(dataset.train_x), len(dataset.test_x)
    check_devices(config, cells(config))
    for cell in cells(config):
        if sgd_batch(config, cell) > n:
            raise ConfigError(
                f"batch size {sgd_batch(config, cell)} is larger than the {n} training examples of {dataset.name}"
            )
        if NORMS[cell.norm].running_stats and stat_batch(config, cell) > n_test:
            raise ConfigError(
                f"batch size {stat_batch(config, cell)} is larger than the {n_test} test examples of {dataset.name}, "
                f"which {cell.norm} norm's batch-statistics evaluation needs"
            )
        needed = steps_per_epoch(config, cell, n) * sgd_batch(config, cell)
        if config.train.sampling == "permutation" and needed > n:
            raise ConfigError(
                f"train.steps_per_epoch={config.train.steps_per_epoch} at batch {cell.batch_size} needs "
                f"{needed} examples per epoch without repeats, but there are {n}; lower it or use "
                f"train.sampling=replacement"
            )


def device_data(dataset: Dataset) -> Data:
    return Data(*(replicate(a) for a in (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y)))


def vmap_grid(fn, chunk_size: int | None = None, per_run: tuple[bool, ...] = ()):
    """`fn(seed, values, data, *rest)` over a grid: seeds [S] in the outer vmap, values [K] in the inner one, so
    minibatches (drawn from the seed) are shared inside; data is shared by all. Each of `rest` is either per run
    ([S, K, ...], `per_run` True) or shared. With `chunk_size`, seeds go through in slices of that many
    (`lax.map`), each slice vmapped."""
    axes = tuple(0 if p else None for p in per_run)
    per_seed = jax.vmap(fn, in_axes=(None, 0, None, *axes))
    if chunk_size is None:
        return jax.vmap(per_seed, in_axes=(0, None, None, *axes))

    def sliced(seeds, values, data, *rest):
        def one(mapped):
            seed, runs = mapped
            runs = iter(runs)
            return per_seed(seed, values, data, *(next(runs) if p else r for p, r in zip(per_run, rest)))

        runs = tuple(r for p, r in zip(per_run, rest) if p)
        return jax.lax.map(one, (seeds, runs), batch_size=chunk_size)

    return sliced


@dataclass
class CellProgram:
    """One cell's compiled grid: all epochs in one program, or, with checkpoints or diagnostics, its phases
    (`Training`), so the host can step in between segments of epochs."""

    whole: Callable | None
    start: Callable | None = None
    epochs: dict[int, Callable] | None = None  # segment length -> program
    finish: Callable | None = None
    diagnose: Callable | None = None
    diagnostics_shape: Diagnostics | None = None
    trace_s: float = 0.0
    compile_s: float = 0.0


class CellOutput(NamedTuple):
    states: TrainState  # leading axes (seed, run)
    metrics: Metrics
    diagnostics: dict[int, Diagnostics]  # epoch -> the layers then, for `train.diagnostics_at`


def stops(config: Config) -> list[int]:
    """The epochs after which a cell's phases hand back to the host: to checkpoint, to diagnose, at the end."""
    train = config.train
    points = {train.epochs, *(e for e in train.diagnostics_at if e > 0)}
    if train.checkpoint_every:
        points.update(range(train.checkpoint_every, train.epochs, train.checkpoint_every))
    return sorted(points)


def compile_cell(config: Config, cell: Cell, dataset: Dataset, data: Data, seeds, values: RunValues) -> CellProgram:
    """The compiled grid of one cell; its vmaps reach only the value axes. All epochs in one program are spread
    over the devices (`normbench.runtime.parallel`); phased cells (checkpoints, diagnostics) run on one (`check_devices`)."""
    started = time.perf_counter()
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    chunk = config.train.chunk_size
    if not (config.train.checkpoint_every or config.train.diagnostics_at):
        specs = (NORMS[cell.norm], MODELS[cell.model])
        key = program_key(config, cell, specs, (dataset.num_classes, seeds, values, data))
        program = lower_grid(vmap_grid(training.train, chunk), config, cell, seeds, values, data, key)
        traced = time.perf_counter()
        whole = program.compile()
        return CellProgram(whole, trace_s=traced - started, compile_s=time.perf_counter() - traced)
    start = jax.jit(vmap_grid(training.start, chunk))
    state = jax.eval_shape(start, seeds, values, data)
    lowered = {"start": start.lower(seeds, values, data)}
    for count in set(np.diff([0, *stops(config)]).tolist()):
        segment = jax.jit(vmap_grid(functools.partial(training.epochs, count=count), chunk, (True, False)))
        lowered[count] = segment.lower(seeds, values, data, state, np.int32(0))
    lowered["finish"] = jax.jit(vmap_grid(training.finish, chunk, (True,))).lower(seeds, values, data, state)
    diagnose = jax.jit(vmap_grid(training.diagnose, chunk, (True,)))
    shape = jax.eval_shape(diagnose, seeds, values, data, state) if config.train.diagnostics_at else None
    if shape is not None:
        lowered["diagnose"] = diagnose.lower(seeds, values, data, state)
    traced = time.perf_counter()
    compiled = {key: program.compile() for key, program in lowered.items()}
    return CellProgram(
        None,
        compiled["start"],
        {key: program for key, program in compiled.items() if isinstance(key, int)},
        compiled["finish"],
        compiled.get("diagnose"),
        shape,
        trace_s=traced - started,
        compile_s=time.perf_counter() - traced,
    )


def execute(program: CellProgram, config: Config, seeds, values: RunValues, data: Data, checkpoints=None,
            on_epochs: Callable[[int], None] | None = None):  # fmt: skip
    """Run a compiled cell to the end: a `CellOutput`. With `checkpoints` (a `normbench.results.resume.CellCheckpoints`),
    resume from its latest save and save every `train.checkpoint_every` epochs; the segments are the same whether
    or not a run was interrupted, so a resumed cell computes exactly what an uninterrupted one does.
    `on_epochs(n)` hears after each segment that n epochs are trained."""
    if program.whole is not None:
        return CellOutput(*program.whole(seeds, values, data), {})
    train = config.train
    state = program.start(seeds, values, data)
    epoch, done, diagnosed = 0, [], {}
    saved = checkpoints.latest(state, program.diagnostics_shape, train.diagnostics_at) if checkpoints else None
    if saved is not None:
        epoch, state, done, diagnosed = saved
    elif 0 in train.diagnostics_at:
        diagnosed[0] = program.diagnose(seeds, values, data, state)
    for stop in (stop for stop in stops(config) if stop > epoch):
        state, per_epoch = program.epochs[stop - epoch](seeds, values, data, state, np.int32(epoch))
        done.append(per_epoch)
        epoch = stop
        if epoch in train.diagnostics_at:
            diagnosed[epoch] = program.diagnose(seeds, values, data, state)
        if checkpoints is not None and train.checkpoint_every and epoch % train.checkpoint_every == 0:
            if epoch < train.epochs:
                checkpoints.save(epoch, state, done, diagnosed)
        if on_epochs is not None:
            jax.block_until_ready(state)  # report the epochs trained, not just queued
            on_epochs(epoch)
    per_epoch = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *done)
    return CellOutput(state.train, metrics(per_epoch, program.finish(seeds, values, data, state), state), diagnosed)


def train_cell(config: Config, cell: Cell, dataset: Dataset, data: Data, seeds, values: RunValues):
    """Compile and train one cell; returns the final states and its `CellResult`."""
    program = compile_cell(config, cell, dataset, data, seeds, values)
    return _train(program, config, cell, data, seeds, values, wait_s=program.trace_s + program.compile_s)


def _train(program: CellProgram, config, cell, data, seeds, values, wait_s: float, checkpoints=None,
           on_epochs=None):  # fmt: skip
    start = time.perf_counter()
    states, metrics, diagnostics = jax.block_until_ready(
        execute(program, config, seeds, values, data, checkpoints, on_epochs)
    )
    end = time.perf_counter()
    metrics, diagnostics = jax.tree.map(np.asarray, (metrics, diagnostics))
    timing = (program.trace_s, program.compile_s, wait_s, end - start)
    return states, CellResult(cell, metrics, *timing, diagnostics, start, end)


def run_sweep(
    config: Config,
    dataset: Dataset,
    progress: Progress | None = None,
    todo: list[Cell] | None = None,
    on_result: Callable[[CellResult], None] | None = None,
    checkpoints_for: Callable[[Cell], object] | None = None,
    workers: int | None = None,
) -> list[CellResult]:
    """Train the cells in `todo` (default: all of the config's); `on_result` receives each as soon as it is
    finished, and `checkpoints_for(cell)` gives the checkpoints of a cell that saves between segments.

    One thread compiles the cells in order, a cell ahead of the trainers, so compiling overlaps training; a cell
    waits only for what that overlap did not cover. `workers` threads train the compiled cells, each its own.
    The default is 2 on a single CPU device, 1 elsewhere: the CPU runs a cell's many small matrix products with
    its cores partly idle, and a second cell at the same time fills them (the init-scale study on 2 cores:
    6.2 s of training one cell after the other, 4.8 s two at a time; see `normbench bench`); a GPU runs one
    program at a time anyway. Each cell computes the same numbers however many run beside it. `progress`
    (default: log lines) hears as each cell starts compiling, starts training and is done."""
    progress = progress or LogProgress()
    check_fits(config, dataset)
    data = device_data(dataset)
    todo = cells(config) if todo is None else todo
    if workers is None:
        workers = 2 if jax.default_backend() == "cpu" and jax.device_count() == 1 else 1
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    results = []
    if not todo:
        return results
    progress.sweep_started(config, todo, len(dataset.train_x))
    compiled = queue.Queue(maxsize=1)
    stop = threading.Event()  # set when any thread fails or the sweep is interrupted
    reporting = threading.Lock()  # one event and one result handler at a time

    def hand_over(item) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                compiled.put(item, timeout=0.1)
                return True
        return False

    def take():
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                return compiled.get(timeout=0.1)
        return None

    def compile_all():
        try:
            for i, cell in enumerate(todo):
                with reporting:
                    progress.compiling(i)
                if not hand_over((i, cell, compile_cell(config, cell, dataset, data, *grid_values(config, cell)))):
                    return
        finally:
            for _ in range(workers):
                hand_over(None)

    def train_all():
        while True:
            waited = time.perf_counter()
            item = take()
            waited = time.perf_counter() - waited
            if item is None:
                return
            i, cell, program = item
            checkpoints = checkpoints_for(cell) if checkpoints_for and config.train.checkpoint_every else None
            with reporting:
                progress.training(i)

            def on_epochs(epochs, i=i):
                with reporting:
                    progress.epochs_done(i, epochs)

            values = grid_values(config, cell)
            _, result = _train(program, config, cell, data, *values, waited, checkpoints, on_epochs)
            with reporting:
                results.append(result)
                if on_result is not None:
                    on_result(result)
                progress.cell_done(i, result)

    with ThreadPoolExecutor(max_workers=1 + workers) as pool:
        threads = [pool.submit(compile_all)] + [pool.submit(train_all) for _ in range(workers)]
        try:
            concurrent.futures.wait(threads, return_when=concurrent.futures.FIRST_EXCEPTION)
            for thread in threads:
                thread.result()
        except BaseException:  # a failure, or Ctrl-C: the other threads stop after what they are running
            stop.set()
            raise
    return results
