"""A sweep: one compiled program per `Cell` (static axes), every value-axis run of that cell vmapped inside it.

The core, in one line (`train_grid`): for each cell, `make_train` gives the pure training of one run,
`vmap_grid` maps it over the cell's runs (the value axes, inner) and seeds (outer), and `jit` compiles that grid;
the cells then train one after another, or a few side by side (`run_sweep`). Beneath it,
`normbench.runtime`: on one device a cell's phases (initialise, one epoch, evaluate), kept traced and compiled
across runs and trained epoch by epoch from the host (`phases`); over several devices all epochs in one program
spread over them (`lower_grid`); and compiling the next cells while the current ones train (`pipeline`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np

from normbench.config import Config, ConfigError, get_field
from normbench.core.diagnostics import Diagnostics
from normbench.core.grid import Cell, CellPlan, Steps, cells, plan
from normbench.core.listener import Progress
from normbench.core.train import PRECISIONS, Data, Metrics, make_train, make_training, metrics, precision_scope
from normbench.data import Dataset
from normbench.models import MODELS
from normbench.norms import BUILT_IN, NORMS
from normbench.protocols import PROTOCOLS
from normbench.runtime.parallel import check_devices, lower_grid, replicate
from normbench.runtime.phases import compile_phases, phases_from_payloads, phases_payloads, run_phases
from normbench.runtime.pipeline import pipeline
from normbench.runtime.processes import Worker, Workers, cores, importable_name, jax_settings
from normbench.runtime.programs import program_key
from normbench.runtime.stopping import Stopped, StopRequest, stop_on_signals


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


def train_grid(config: Config, cell: Cell, num_classes: int, n_train: int) -> Callable:
    """The whole idea: every run of `cell` (seeds x value axes) trained as one compiled program,
    `jit(vmap(vmap(train)))`, where `train` (`normbench.core.train.make_train`) is a `lax.scan` over epochs
    (`run_epochs`) of a `lax.scan` over steps (`epoch_steps`) of `batch_step`. Called as `(seeds, values, data)
    -> (final states, Metrics)`, with `CellPlan.arrays` and `device_data`.

    `normbench run` computes these same bits, only arranged for the machine (`compile_cell`): on one device the
    phases of `train` compiled apart and stepped epoch by epoch from the host (`normbench.runtime.phases`), over
    several devices this program spread over them (`normbench.runtime.parallel.lower_grid`)."""
    return jax.jit(vmap_grid(make_train(config, cell, num_classes, n_train), plan(config, cell).chunk_size))


@dataclass
class CellProgram:
    """One cell's compiled grid: on one device its `phases`, trained epoch by epoch from the host
    (`normbench.runtime.phases`); spread over several, `whole(seeds, values, data) -> (states, metrics)`, all
    epochs in one program."""

    whole: Callable | None
    phases: object = None  # normbench.runtime.phases.Phases
    trace_s: float = 0.0  # tracing and lowering it to XLA (a kept program: loading it)
    compile_s: float = 0.0  # XLA's compilation of it

    def memory_analysis(self):
        """XLA's memory figures of the program that trains: the whole one, or the epoch's."""
        return (self.whole or self.phases.epoch).memory_analysis()


def trains_in_phases(config: Config, cell: Cell) -> bool:
    """Whether `cell` trains epoch by epoch on one device, rather than as one program over several devices: a
    data-parallel protocol's batch split or a grid spread over devices needs the whole program; checkpoints and
    diagnostics need the phases."""
    single = jax.device_count() == 1 and PROTOCOLS[cell.protocol].split(config).axis is None
    return single or bool(config.train.checkpoint_every or config.train.diagnostics_at)


def compile_cell(config: Config, cell: Cell, dataset: Dataset, data: Data, on_epoch=None,
                 on_metrics=None) -> CellProgram:  # fmt: skip
    """The compiled grid of one cell; its vmaps reach only the value axes, so no norm ever reduces across runs.
    On one device its phases (`trains_in_phases`); over several, all epochs in one program (`lower_grid`), where
    `on_epoch` is called from inside the program as each epoch starts and `on_metrics` with each epoch's metrics
    as it ends (`normbench.core.train.make_training`); phases tell the host between epochs instead."""
    started = time.perf_counter()
    cell_plan = plan(config, cell)
    seeds, values = cell_plan.arrays()
    grid = functools.partial(vmap_grid, chunk_size=cell_plan.chunk_size)
    if trains_in_phases(config, cell):
        specs = (NORMS[cell.norm], MODELS[cell.model])
        key = program_key(config, cell, specs, (dataset.num_classes, seeds, values, data))
        training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
        phases = compile_phases(training, grid, config, seeds, values, data, key)
        return CellProgram(None, phases, phases.trace_s, phases.compile_s)
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x), on_epoch, on_metrics)
    split, chunked = PROTOCOLS[cell.protocol].split(config), cell_plan.chunk_size is not None
    lowered = lower_grid(grid(training.train), split, chunked, seeds, values, data)
    traced = time.perf_counter()
    whole = lowered.compile()
    return CellProgram(whole, trace_s=traced - started, compile_s=time.perf_counter() - traced)


@dataclass
class CellResult:
    cell: Cell
    metrics: Metrics  # numpy, leading axes (seed, run) in `CellPlan.values` order
    trace_s: float
    compile_s: float
    wait_s: float  # how long its trainer waited for it (the rest of compiling overlapped other cells' training)
    train_s: float  # trained in worker processes (`run_sweep`'s `processes`): the sum over its units
    diagnostics: dict[int, Diagnostics] = field(default_factory=dict)  # epoch -> numpy, for train.diagnostics_at
    trained_from: float = 0.0  # time.perf_counter() when its training started and ended: cells train side by side
    trained_until: float = 0.0
    processes: int = 1  # how many worker processes trained its sweep (`train_in_processes`); 1: the caller's own


def train_program(program: CellProgram, config: Config, cell: Cell, data: Data, wait_s: float = 0.0,
                  checkpoints=None, on_epoch=None, stop: StopRequest | None = None):  # fmt: skip
    """Train a compiled cell to the end: (final states, `CellResult`). A cell in phases saves `checkpoints`,
    tells `on_epoch(n, metrics)` as each epoch ends and, once `stop` is asked, raises `Stopped` as its epoch ends
    (`normbench.runtime.phases.run_phases`)."""
    seeds, values = plan(config, cell).arrays()
    start = time.perf_counter()
    if program.whole is not None:
        states, cell_metrics, diagnostics = *program.whole(seeds, values, data), {}
    else:
        state, per_epoch, final, diagnostics = run_phases(program.phases, config, seeds, values, data,
                                                          checkpoints, on_epoch, stop)  # fmt: skip
        states, cell_metrics = state.train, metrics(per_epoch, final, state)
    states, cell_metrics, diagnostics = jax.block_until_ready((states, cell_metrics, diagnostics))
    end = time.perf_counter()
    cell_metrics, diagnostics = jax.tree.map(np.asarray, (cell_metrics, diagnostics))
    timing = (program.trace_s, program.compile_s, wait_s, end - start)
    return states, CellResult(cell, cell_metrics, *timing, diagnostics, start, end)


def train_cell(config: Config, cell: Cell, dataset: Dataset, data: Data):
    """Compile and train one cell; returns the final states and its `CellResult`."""
    program = compile_cell(config, cell, dataset, data)
    return train_program(program, config, cell, data, wait_s=program.trace_s + program.compile_s)


def run_sweep(
    config: Config,
    dataset: Dataset,
    progress: Progress | None = None,
    todo: list[Cell] | None = None,
    on_result: Callable[[CellResult], None] | None = None,
    checkpoints_for: Callable[[Cell], object] | None = None,
    workers: int | None = None,
    processes: int = 1,
) -> list[CellResult]:
    """Train the cells in `todo` (default: all of the config's); `on_result` receives each as soon as it is
    finished, and `checkpoints_for(cell)` gives the checkpoints of a cell that saves between epochs.

    `workers` cells train at once, each on its own thread. The default is 2 on a single CPU device, 1 elsewhere:
    the CPU runs a cell's many small matrix products with its cores partly idle, and a second cell at the same
    time fills them (see `normbench bench`); a GPU runs one program at a time anyway. Each cell computes the same
    numbers however many run beside it. With `processes` above 1 (on a single CPU device), the cells train instead
    in up to that many worker processes, each pinned to a core (`train_in_processes`), with the same numbers;
    where they make only one unit (`units`), in this process as without. `progress` (default: no one) hears as
    each cell starts compiling, starts training, goes through its epochs and is done.

    Called from the main thread, the first Ctrl-C or SIGTERM stops every cell in training as its epoch ends
    (`normbench.runtime.stopping`); the cells finished by then have gone to `on_result`, and `Stopped` is raised."""
    todo = cells(config) if todo is None else todo
    workers, processes = resolve_workers(workers), resolve_processes(processes, config)
    if not todo:
        return []
    progress = progress or Progress()
    progress.sweep_started(config, todo, len(dataset.train_x))
    events, stop = Events(progress, config, todo), StopRequest()
    with precision_scope(config.train.precision):
        data = device_data(dataset, config.train.precision)

        def compile(i):
            events.tell("compiling", i)
            return compile_cell(config, todo[i], dataset, data, *events.in_program(i))

        def train(i, program, waited):
            checkpoints = checkpoints_for(todo[i]) if checkpoints_for and config.train.checkpoint_every else None
            events.tell("training", i)
            _, result = train_program(program, config, todo[i], data, waited, checkpoints, events.epoch_done(i), stop)
            events.cell_done(i, result, on_result)
            return result

        with stop_on_signals(stop, logging.getLogger("normbench").warning):
            split = units(config, todo) if processes > 1 else []
            if len(split) > 1:
                count = min(processes, len(split))
                results = train_in_processes(config, dataset, todo, split, data, count, events, stop, on_result)
            else:
                results = pipeline(len(todo), compile, train, workers, stop=stop)
    if stop.asked:  # every cell in training finished its last epoch: still a stop, before anything that follows
        raise Stopped
    return results


@dataclass(frozen=True)
class Unit:
    """What one worker process trains at a time (`train_in_processes`): cell `cell`'s runs of `seeds`."""

    cell: int  # its index in the sweep's cells
    seeds: tuple[int, ...]


def units(config: Config, todo: list[Cell]) -> list[Unit]:
    """The cells split for worker processes. A cell whose seeds train in chunks (`CellPlan.chunk_size`) gives one
    unit per chunk, whose program is the cell's own loop body, so it computes the cell's bits; any other cell is
    one unit, since fewer seeds vmapped together may sum in another order."""
    seeds = config.sweep.seeds
    out = []
    for i, cell in enumerate(todo):
        step = plan(config, cell).chunk_size or len(seeds)
        out += [Unit(i, tuple(seeds[k : k + step])) for k in range(0, len(seeds), step)]
    return out


def with_seeds(config: Config, seeds: tuple[int, ...]) -> Config:
    return dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, seeds=seeds))


def train_in_processes(config: Config, dataset: Dataset, todo: list[Cell], split: list[Unit], data: Data, count: int,
                       events: Events, stop: StopRequest, on_result) -> list[CellResult]:  # fmt: skip
    """`run_sweep`'s cells trained in `count` worker processes, each pinned to a core
    (`normbench.runtime.processes`), unit by unit (`split`, from `units`). This process compiles each unit's
    phases with all its cores, the next while the workers train (`pipeline`), once for the units of a cell that
    share a shape, and sends them as bytes; a worker loads and trains them, telling each epoch. A cell is done,
    its `CellResult` the concatenation of its units', when its last unit is. A stop ends every unit in training at
    its epoch's end; a cell some of whose units were not trained is dropped."""
    of_cell: dict[int, list[int]] = {}
    for u, unit in enumerate(split):
        of_cell.setdefault(unit.cell, []).append(u)
    epochs: dict[int, int] = {}
    started: set[int] = set()
    trained: dict[int, CellResult] = {}
    compiled: dict[tuple[int, int], tuple] = {}  # (cell, seeds) -> (payloads, trace_s, compile_s), this cell's
    lock = threading.Lock()

    def heard(u: int, epoch: int, measured) -> None:
        i = split[u].cell
        epochs[u] = epoch
        done = sum(epochs.get(v, 0) * len(split[v].seeds) for v in of_cell[i])
        events.tell("epochs_done", i, done / len(config.sweep.seeds))
        if measured is not None:
            events.tell("epoch_metrics", i, epoch, np.asarray(split[u].seeds, np.uint32), measured)

    def compile(u: int) -> tuple:
        unit = split[u]
        if u == of_cell[unit.cell][0]:
            events.tell("compiling", unit.cell)
        shape = (unit.cell, len(unit.seeds))
        if shape in compiled:
            return compiled[shape][0], 0.0, 0.0
        compiled.clear()
        program = compile_cell(with_seeds(config, unit.seeds), todo[unit.cell], dataset, data)
        compiled[shape] = (phases_payloads(program.phases), program.trace_s, program.compile_s)
        return compiled[shape]

    def train(u: int, program: tuple, waited: float) -> CellResult | None:
        unit, (payloads, trace_s, compile_s) = split[u], program
        with lock:
            first = not started & set(of_cell[unit.cell])
            started.add(u)
        if first:
            events.tell("training", unit.cell)
        wanted, cell = events.progress.epoch_metrics_wanted, todo[unit.cell]
        norm_at = addresses.get(cell.norm)
        part = workers.run(train_unit, with_seeds(config, unit.seeds), cell, norm_at, payloads, u, wanted)
        with lock:
            trained[u] = dataclasses.replace(part, trace_s=trace_s, compile_s=compile_s, wait_s=waited, processes=count)
            parts = [trained.get(v) for v in of_cell[unit.cell]]
        if None in parts:
            return None
        result = joined(parts)
        events.cell_done(unit.cell, result, on_result)
        return result

    addresses = norm_addresses(todo)
    workers = Workers(count, dataset, jax_settings(), heard)
    stop.when_asked(workers.stop)
    finished = False
    try:
        results = pipeline(len(split), compile, train, count, stop=stop)
        finished = True
    finally:
        workers.close(abort=not finished)
    return [result for result in results if result is not None]  # a cell's result is in its last unit's slot


def train_unit(worker: Worker, config: Config, cell: Cell, norm_at: tuple[str, str] | None, payloads: dict | None,
               unit: int, epoch_metrics: bool) -> CellResult:  # fmt: skip
    """A worker process's job (`train_in_processes`): `cell`'s runs under `config` (the unit's seeds), with the
    phases that the parent sent (`payloads`), or compiled here where they could not travel (None), and the cell's
    norm from where `norm_at` says (`norm_addresses`; None: a norm the worker knows). Each epoch is told to the
    parent as (unit, epoch, its metrics where `epoch_metrics` else None)."""
    if norm_at is not None:
        module, attribute = norm_at
        NORMS[cell.norm] = getattr(importlib.import_module(module), attribute)
    dataset = worker.shared
    with precision_scope(config.train.precision):
        if worker.kept.get("precision") != config.train.precision:
            worker.kept.update(precision=config.train.precision, data=device_data(dataset, config.train.precision))
        data = worker.kept["data"]
        if payloads is None:
            program = compile_cell(config, cell, dataset, data)
        else:
            if worker.kept.get("payloads") != payloads:  # the next unit of a cell runs the same programs
                worker.kept.update(payloads=payloads, phases=phases_from_payloads(payloads))
            program = CellProgram(None, worker.kept["phases"])

        def on_epoch(epoch, measured):
            worker.tell(unit, epoch, jax.tree.map(np.asarray, measured) if epoch_metrics else None)

        return train_program(program, config, cell, data, on_epoch=on_epoch, stop=worker)[1]


def joined(parts: list[CellResult]) -> CellResult:
    """One cell's `CellResult` from its units' (in seed order): metrics and diagnostics concatenated along the
    seeds, times summed, training from the first unit's start to the last one's end."""
    seeds = lambda *arrays: np.concatenate(arrays)  # noqa: E731
    first = parts[0]
    return CellResult(
        first.cell,
        jax.tree.map(seeds, *(p.metrics for p in parts)),
        *(sum(getattr(p, f) for p in parts) for f in ("trace_s", "compile_s", "wait_s", "train_s")),
        {epoch: jax.tree.map(seeds, *(p.diagnostics[epoch] for p in parts)) for epoch in first.diagnostics},
        min(p.trained_from for p in parts),
        max(p.trained_until for p in parts),
        first.processes,
    )


class Events:
    """A sweep's events, told to its `progress` listener one at a time, whichever thread they come from: from the
    host between a phased cell's epochs (`epoch_done`), or from inside a program over several devices
    (`in_program`)."""

    def __init__(self, progress: Progress, config: Config, todo: list[Cell]):
        self.progress, self.config, self.todo = progress, config, todo
        self.lock = threading.Lock()

    def tell(self, event: str, *args) -> None:
        with self.lock:
            getattr(self.progress, event)(*args)

    def cell_done(self, i: int, result: CellResult, on_result) -> None:
        with self.lock:
            if on_result is not None:
                on_result(result)
            self.progress.cell_done(i, result)

    def epoch_done(self, i: int) -> Callable:
        """`on_epoch(n, metrics)` of cell `i` trained in phases (`train_program`)."""
        seeds = plan(self.config, self.todo[i]).arrays()[0]

        def on_epoch(epoch, measured):
            with self.lock:
                if self.progress.epoch_metrics_wanted:
                    self.progress.epoch_metrics(i, epoch, seeds, jax.tree.map(np.asarray, measured))
                self.progress.epochs_done(i, epoch)

        return on_epoch

    def in_program(self, i: int) -> tuple[Callable | None, Callable | None]:
        """The callbacks of cell `i`'s program over several devices as each epoch starts and ends, each only where
        the listener asks for it (`compile_cell`)."""
        return (self._epoch_started(i) if self.progress.per_epoch else None,
                self._epoch_metrics(i) if self.progress.epoch_metrics_wanted else None)  # fmt: skip

    def _epoch_started(self, i: int) -> Callable:
        # A chunked grid runs every epoch once per chunk of seeds, the epoch index starting over each time.
        seeds = self.config.sweep.seeds
        chunks = -(-len(seeds) // (plan(self.config, self.todo[i]).chunk_size or len(seeds)))
        calls = itertools.count()

        def on_epoch(index):
            begun = next(calls)
            self.tell("epochs_done", i, int(index) if chunks == 1 else begun / chunks)

        return on_epoch

    def _epoch_metrics(self, i: int) -> Callable:
        heard = set()  # a data-parallel protocol's devices each report the same epoch

        def on_metrics(index, seeds, metrics):
            seeds = np.asarray(seeds).reshape(-1)
            if (int(index), *seeds.tolist()) in heard:
                return
            heard.add((int(index), *seeds.tolist()))
            metrics = jax.tree.map(lambda m: np.asarray(m).reshape(len(seeds), -1), metrics)
            self.tell("epoch_metrics", i, int(index) + 1, seeds, metrics)

        return on_metrics


def training_time(results: list[CellResult]) -> float:
    """Wall-clock seconds in which at least one of the cells was training."""
    total, end = 0.0, float("-inf")
    for r in sorted(results, key=lambda r: r.trained_from):
        total += max(0.0, r.trained_until - max(r.trained_from, end))
        end = max(end, r.trained_until)
    return total


def resolve_workers(workers: int | None) -> int:
    """How many cells train at once: `workers`, checked, or the default for the devices."""
    if workers is None:
        return 2 if jax.default_backend() == "cpu" and jax.device_count() == 1 else 1
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    return workers


def resolve_processes(processes: int | None, config: Config) -> int | None:
    """How many worker processes train the cells (`train_in_processes`), checked: 1 trains in this process; None
    (`auto`) is left for `auto_processes` to decide once the sweep's training time is estimated."""
    if processes is None or processes == 1:
        return processes
    if processes < 1:
        raise ConfigError(f"processes must be at least 1, got {processes}")
    refusal = _no_workers(config)
    if refusal is not None:
        raise ConfigError(refusal)
    return processes


def norm_addresses(todo: list[Cell]) -> dict[str, tuple[str, str] | None]:
    """Where a worker process finds each norm of `todo` that it does not know (not `BUILT_IN`): the module global
    that is its registered spec (`importable_name`), e.g. `my_norms.SPEC` registered with `normbench.register_norm`;
    None where there is none, which `_no_workers` keeps in this process. A norm it knows is not listed."""
    return {cell.norm: importable_name(NORMS[cell.norm]) for cell in todo
            if NORMS[cell.norm] is not BUILT_IN.get(cell.norm)}  # fmt: skip


def _no_workers(config: Config) -> str | None:
    """Why this run cannot train in worker processes (`resolve_processes` refuses them, `auto_processes` does not
    start them), None where it can."""
    devices, backend = jax.device_count(), jax.default_backend()
    if backend != "cpu" or devices > 1:
        return (f"--processes trains a process per CPU core, but this run sees {devices} {backend} device(s); "
                "drop --processes")  # fmt: skip
    if config.train.checkpoint_every:
        return ("train.checkpoint_every saves a cell's state in the process that trains it, which --processes leaves "
                "to workers; unset one of them")  # fmt: skip
    for name, address in norm_addresses(cells(config)).items():
        if address is None:
            return (f"norm {name!r} was registered in this process from no module's global (made in a notebook, a "
                    "script's own code or a function), so a worker process cannot import it: define its spec in a "
                    "module and register that, or train in this process (--processes 1, processes=1)")  # fmt: skip
    return None


# `--processes auto` starts workers only for a sweep estimated to train at least this long: a worker costs 2-3 s
# to start (Python, JAX, its programs), and where it paid, a second process saved a fifth to a half of a CNN cell's
# training (docs/performance.md, "A process per core"), so it breaks even at about 5-14 s.
AUTO_MIN_TRAIN_S = 10.0
# Each worker holds its own JAX runtime, data and programs (a worker training a chunk of a CNN cell at batch 128:
# 370 MB resident), and no machine of more than 2 cores was measured: more than this is for `--processes N`.
AUTO_MAX_PROCESSES = 8


def auto_processes(config: Config, todo: list[Cell], train_s: float) -> int:
    """`--processes auto`: a worker process per core where some cell's seeds train in chunks (`units`) and the
    sweep's training is estimated at `AUTO_MIN_TRAIN_S` or more (`train_s`); else 1, this process. Chunks are
    where a process per core gains: a chunk trains alone on its core, where one process runs the chunks one after
    another over both cores. Whole cells gain nothing: two already train at once (`resolve_workers`), and the
    init-scale study's two cells took as long in two processes. Not with several devices or a GPU, nor with
    `train.checkpoint_every`, which worker processes do not save, nor for a norm registered from no module, which
    they cannot import (`norm_addresses`)."""
    if _no_workers(config) is not None:
        return 1
    split = units(config, todo)
    if len(split) == len(todo) or train_s < AUTO_MIN_TRAIN_S:
        return 1
    return min(len(cores()), len(split), AUTO_MAX_PROCESSES)


def check_fits(config: Config, dataset: Dataset) -> None:
    """Reject batch shapes the data cannot fill, before anything is compiled: once per study (`run_study`), before
    its output directory is touched; `run_sweep` trains what this accepted."""
    n, n_test = len(dataset.train_x), len(dataset.test_x)
    check_devices(config, [PROTOCOLS[cell.protocol].split(config) for cell in cells(config)])
    for cell in cells(config):
        cell_plan = plan(config, cell)
        # the cell's own config: a swept field at its value there
        batch, statistics, train = cell_plan.sgd_batch, max(cell_plan.stat_sizes), cell_plan.config.train
        if batch > n:
            raise ConfigError(f"batch size {batch} is larger than the {n} training examples of {dataset.name}")
        if NORMS[cell.norm].running_stats and statistics > n_test:
            raise ConfigError(
                f"batch size {statistics} is larger than the {n_test} test examples of {dataset.name}, "
                f"which {cell.norm} norm's batch-statistics evaluation needs"
            )
        steps = cell_plan.steps(n)
        if (train.first_epoch_steps or 0) > steps.per_epoch:
            raise ConfigError(
                f"train.first_epoch_steps={train.first_epoch_steps} exceeds the {steps.per_epoch} steps of an epoch "
                f"at batch {cell.batch_size}"
            )
        check_run_steps(cell_plan, steps)
        needed = steps.per_epoch * batch
        # Epochs that train.min_steps lengthens are whole passes, each without repeats.
        if train.sampling == "permutation" and train.steps_per_epoch and needed > n:
            raise ConfigError(
                f"train.steps_per_epoch={train.steps_per_epoch} at batch {cell.batch_size} needs "
                f"{needed} examples per epoch without repeats, but there are {n}; lower it or use "
                f"train.sampling=replacement"
            )


def check_run_steps(cell_plan: CellPlan, steps: Steps) -> None:
    """A run counts its steps in int32 (the optimizer's count, the schedules, batch_renorm's fractions of the run):
    past 2**31 - 1 they would wrap, or fail to trace, so the fields that make them are refused by name."""
    total, run = steps.per_run, cell_plan.config
    if total < 2**31:
        return
    per_epoch, train = steps.per_epoch, run.train
    fields = ["train.epochs"] + [f"train.{f}" for f in ("steps_per_epoch", "min_steps") if getattr(train, f)]
    raise ConfigError(
        f"{', '.join(f'{f}={get_field(run, f)}' for f in fields)} make {total:,} steps a run "
        f"({train.epochs:,} epochs of {per_epoch:,} at batch {cell_plan.sgd_batch}); a run counts its steps in "
        f"int32, so they must stay below 2**31: lower {' or '.join(fields)}"
    )


def device_data(dataset: Dataset, precision: str = "float32") -> Data:
    """The data on every device, images in the training's `precision`."""
    arrays = (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y, *dataset.validation())
    dtype = PRECISIONS[precision]
    return Data(*(replicate(a.astype(dtype) if a.dtype.kind == "f" else a) for a in arrays))
