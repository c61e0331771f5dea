"""What a sweep will cost, estimated from traced programs before anything is compiled: its peak memory, which
`run` checks against the memory available, and its time: its matmul FLOPs over this machine's last measured rate.

Per run: the bytes of its `RunState` (`jax.eval_shape` of `Training.start`) plus every intermediate value of
one training epoch's program (the outputs of each operation in its jaxpr, a loop's body once): activations,
gradients, optimizer updates, the gathered minibatch; or of the evaluations after the last epoch, where those
hold more (PreciseBN's batches). XLA reuses buffers, so the sum is an upper bound on what one run holds at once.
A cell holds all its runs; the data is shared. Cells that differ only in batch size are traced once, at their
largest batch, whose intermediates bound the others'; a deep ViT at two depths, extended to its own. `run`
refuses a sweep above the memory available: the device's, or on a CPU a share of the least of physical memory,
the cgroup's limit and what `ulimit -v` leaves.

Time: the same trace of one run's epoch gives the FLOPs (`normbench.flops`: matrix products and convolutions) of
its training steps, split from its evaluations by the step's named scope, and one trace of `Training.finish`
those of the evaluations after the last epoch. A step's FLOPs scale with its batch, so the group's one trace
serves every batch size; the evaluations' do not. Each `normbench run` records what it trained and how long it
took (`normbench.runtime.calibration`); the estimate is the sweep's FLOPs over this device kind's rate plus a
cost per program step fitted to its last runs, and without any run a range from an assumed rate. Compiling is
not in it, and the estimate says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from normbench.config import Config, ConfigError, replace_field
from normbench.core.grid import Cell, CellPlan, Steps, cells, plan
from normbench.core.sweep import vmap_grid
from normbench.core.train import PRECISIONS, STEP_SCOPE, TRAIN_ACC_SCOPE, Data, make_training, precision_scope
from normbench.data import Dataset
from normbench.flops import jaxpr_flops
from normbench.models import MODELS
from normbench.norms import NORMS
from normbench.protocols import BASELINE, PROTOCOLS
from normbench.runtime.cache import cache_dir, keep
from normbench.runtime.calibration import Rate
from normbench.runtime.programs import program_key

MIB = 2**20
# The share of physical memory a sweep may plan for on a CPU: the rest is the OS's, Python's and XLA's own.
CPU_SHARE = 0.8
# The rates an uncalibrated estimate assumes, FLOP/s: a laptop CPU's few cores on small matrices to a workstation's.
ASSUMED_RATES = (20e9, 100e9)
# The depths a deeper cell is traced at, its costs extended along the line through them (`_trace_any_depth`).
LINE_DEPTHS = (2, 3)


@dataclass(frozen=True)
class Work:
    """The matmul FLOPs of one run of a cell, by where they happen."""

    step: float  # a training step's, per example of its SGD batch
    epoch: int  # every epoch's other work (the loss landscape's probes)
    train_acc: int  # the training set's evaluation, in the epochs that measure it
    test: int  # an epoch's held-out evaluations, in the epochs that test
    finish: int  # the evaluations after the last epoch


@dataclass(frozen=True)
class Estimate:
    cell_bytes: tuple[int, ...]  # each cell's runs: their states and one epoch's intermediates
    data_bytes: int
    workers: int  # cells training at once
    run_steps: int  # training steps summed over every run of the sweep
    cell_flops: tuple[int, ...] = ()  # each cell's matmul FLOPs: all its runs, training and evaluations
    cell_steps: tuple[int, ...] = ()  # each cell's steps, which its program takes for all its runs at once
    rate: Rate | None = None  # this device kind's last measured rate, None if not calibrated

    @property
    def peak_bytes(self) -> int:
        return self.data_bytes + sum(sorted(self.cell_bytes, reverse=True)[: self.workers])

    @property
    def flops(self) -> int:
        return sum(self.cell_flops)

    @property
    def steps(self) -> int:
        return sum(self.cell_steps)

    def train_seconds(self) -> float:
        """The training time expected: at this device kind's last measured rate, or without one at the slower of
        the assumed rates."""
        if self.rate is not None:
            return self.rate.seconds(self.flops, self.steps)
        return self.flops / ASSUMED_RATES[0]

    def text(self) -> str:
        at_once = min(self.workers, len(self.cell_bytes))
        cells = "cell" if at_once == 1 else f"{at_once} cells"
        return (
            f"about {self.peak_bytes / MIB:,.0f} MiB for the largest {cells} training at once; "
            f"{self.run_steps:,} run-steps, {_flop_text(self.flops)}: {self.time_text()}"
        )

    def time_text(self) -> str:
        # Compiling is left out, and said to be: a cell's compile time follows neither its FLOPs nor its steps (a
        # tiny MLP cell compiles for seconds and trains for a fraction of one), and the program cache skips it.
        cells = "1 cell" if len(self.cell_bytes) == 1 else f"{len(self.cell_bytes)} cells"
        text = f"{self.training_text()}, not counting compiling its {cells}"
        return text if self.rate is not None else f"{text}; run once to calibrate"

    def training_text(self) -> str:
        """The training time alone: at the rate, or at the assumed rates without one."""
        if self.rate is not None:
            return f"about {_duration(self.train_seconds())} of training at {self.rate.text()}"
        fast, slow = (_duration(self.flops / rate) for rate in reversed(ASSUMED_RATES))
        low, high = (f"{rate / 1e9:.0f}" for rate in ASSUMED_RATES)
        return f"about {fast} to {slow} of training at an assumed {low}-{high} GFLOP/s"


# What the program cache keeps of an estimate: all but the workers and the rate, which each run gives.
KEPT = ("cell_bytes", "data_bytes", "run_steps", "cell_flops", "cell_steps")


def estimate(config: Config, dataset: Dataset, workers: int, rate: Rate | None = None) -> Estimate:
    """The memory and work of training `config`'s cells on `dataset`, `workers` cells at a time; its time at
    `rate` (`normbench.runtime.calibration.last_rate`), a range of assumed rates if None. Tracing the cells
    for it takes a second or two, every run of a study: the numbers are kept in the program cache
    (`normbench.runtime.programs`), under a key of all they depend on."""
    specs = tuple(
        {id(spec): spec for cell in cells(config) for spec in (NORMS[cell.norm], MODELS[cell.model])}.values()
    )
    key = program_key(config, "estimate", specs, (dataset.num_classes, _arrays(dataset)))
    path = None if key is None else cache_dir() / "estimates" / f"{key}.json"
    try:
        kept = json.loads(path.read_text())
        fields = {name: kept[name] for name in KEPT}  # an entry missing one (an older kind) is not sound
        cost = Estimate(workers=workers, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (AttributeError, OSError, ValueError, KeyError, TypeError):  # none kept, or not a sound entry
        with precision_scope(config.train.precision):
            cost = _estimate(config, dataset, workers)
        if path is not None:
            keep(path, json.dumps({name: getattr(cost, name) for name in KEPT}).encode())
    return dataclasses.replace(cost, rate=rate)


def _estimate(config: Config, dataset: Dataset, workers: int) -> Estimate:
    n_train = len(dataset.train_x)
    data = abstract_data(dataset, config.train.precision)
    all_cells = cells(config)
    largest: dict[tuple, Cell] = {}
    for cell in all_cells:
        group = (cell.model, cell.norm, cell.protocol, cell.fields)
        if group not in largest or cell.batch_size > largest[group].batch_size:
            largest[group] = cell
    traced = {group: _trace_any_depth(config, cell, dataset, data) for group, cell in largest.items()}
    cell_bytes, cell_flops, cell_steps = [], [], []
    plans = [plan(config, cell) for cell in all_cells]
    for cell, cell_plan in zip(all_cells, plans):
        programs, work = traced[cell.model, cell.norm, cell.protocol, cell.fields]
        run_steps = cell_plan.steps(n_train)
        cell_bytes.append(max(cell_plan.run_count * each + shared for each, shared in programs))
        cell_flops.append(cell_plan.run_count * run_flops(cell_plan, run_steps, work))
        cell_steps.append(run_steps.per_run)
    data_bytes = sum(a.nbytes for a in _arrays(dataset))
    steps = sum(cell_plan.run_count * n for cell_plan, n in zip(plans, cell_steps))
    return Estimate(tuple(cell_bytes), data_bytes, workers, steps, tuple(cell_flops), tuple(cell_steps))


def run_flops(cell_plan: CellPlan, steps: Steps, work: Work) -> int:
    """The matmul FLOPs of one run of the planned cell taking `steps`, from the `Work` of its group's trace."""
    train, epochs = cell_plan.config.train, cell_plan.config.train.epochs
    tested, measured = (_due_epochs(epochs, every) for every in (train.test_every, train.train_acc_every))
    steps = steps.per_run * cell_plan.sgd_batch * work.step
    return round(steps + epochs * work.epoch + measured * work.train_acc + tested * work.test + work.finish)


def _due_epochs(epochs: int, every: int) -> int:
    """Every `every`-th epoch and the last, counted without listing them: epochs may be in the billions."""
    return epochs // every + (epochs % every != 0)


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
    """The device's memory limit where it reports one; else (a CPU) a share of the least of the limits this process
    lives under: physical memory, its cgroup's (a container's) memory limit, and the address space RLIMIT_AS
    (`ulimit -v`) leaves it. None if none can be read."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    limits = [limit for limit in (_physical_bytes(), cgroup_limit(), _address_space_left()) if limit is not None]
    return int(CPU_SHARE * min(limits)) if limits else None


def _physical_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _address_space_left() -> int | None:
    """What RLIMIT_AS lets this process still map: its soft limit less what it maps already (the imports, XLA's
    thread stacks), None when unlimited."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the limit alone
        mapped = 0
    return max(limit - mapped, 0)


def cgroup_limit(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The memory limit of this process's cgroup, the least along its path up to `root` (a container's limit is
    often set on a parent): cgroup v2's memory.max, or v1's memory.limit_in_bytes, whose "no limit" is a number
    near 2**63. None without a limit or a cgroup file system."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    places = []
    for line in lines:  # "0::/path" (v2), "4:memory:/path" (v1, controllers comma-separated)
        controllers, _, path = line.partition(":")[2].partition(":")
        if not controllers:
            places.append((root, path, "memory.max"))
        elif "memory" in controllers.split(","):
            places.append((root / "memory", path, "memory.limit_in_bytes"))
    # In a container with its own cgroup namespace the path reads "/", and the mount's top is the container's.
    places += [(root, "/", "memory.max"), (root / "memory", "/", "memory.limit_in_bytes")]
    limits = []
    for mount, path, name in places:
        folder = mount / path.strip("/")
        for parent in (folder, *folder.parents):
            limits.append(_limit_in(parent / name))
            if parent == mount:
                break
    limits = [limit for limit in limits if limit is not None and limit < 2**62]
    return min(limits) if limits else None


def _limit_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # missing, or v2's "max"
        return None


def _arrays(dataset: Dataset) -> tuple[np.ndarray, ...]:
    return dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y, *dataset.validation()


def abstract_data(dataset: Dataset, precision: str) -> Data:
    """The shapes and dtypes of `device_data(dataset, precision)`, for tracing without the arrays."""
    dtype = PRECISIONS[precision]
    return Data(*(jax.ShapeDtypeStruct(a.shape, dtype if a.dtype.kind == "f" else a.dtype) for a in _arrays(dataset)))


def _trace_any_depth(config: Config, cell: Cell, dataset: Dataset, data: Data) -> tuple[list[tuple[int, int]], Work]:
    """`_trace` of `cell` at its `model.depth`, traced at no more than `LINE_DEPTHS[1]` blocks: the blocks a depth
    counts are alike, so every value's bytes and every product's FLOPs grow by the same amount with each, and the
    costs at any depth lie on the line through two (exactly: tested). Tracing every block made `show` take as
    long as the depth is deep."""
    depth = plan(config, cell).config.model.depth
    if depth <= LINE_DEPTHS[1] or not _reads_depth(config, cell):
        return _trace(config, cell, dataset, data)
    low, high = (_trace(*_at_depth(config, cell, d), dataset, data) for d in LINE_DEPTHS)
    blocks = (depth - LINE_DEPTHS[0]) // (LINE_DEPTHS[1] - LINE_DEPTHS[0])
    programs = [tuple(a + blocks * (b - a) for a, b in zip(*pair)) for pair in zip(low[0], high[0])]
    work = Work(*(a + blocks * (b - a) for a, b in zip(dataclasses.astuple(low[1]), dataclasses.astuple(high[1]))))
    return programs, work


def _reads_depth(config: Config, cell: Cell) -> bool:
    """Whether `cell`'s model is built from `model.depth`: its norms' widths or its options change with it."""
    spec, batch_dependent = MODELS[cell.model], NORMS[cell.norm].batch_dependent
    models = [dataclasses.replace(plan(config, cell).config.model, depth=d) for d in LINE_DEPTHS]
    built = [(spec.widths(model), spec.options(model, batch_dependent)) for model in models]
    return built[0] != built[1]


def _at_depth(config: Config, cell: Cell, depth: int) -> tuple[Config, Cell]:
    """`config` and `cell` with `model.depth` at `depth`, where the config sets it or a static sweep axis does."""
    fields = tuple((key, depth if key == "model.depth" else value) for key, value in cell.fields)
    return replace_field(config, "model.depth", depth), dataclasses.replace(cell, fields=fields)


def _trace(config: Config, cell: Cell, dataset: Dataset, data: Data) -> tuple[list[tuple[int, int]], Work]:
    """((bytes per run, bytes shared by the runs) of each program that holds the runs' states: an epoch and the
    evaluations after the last, whose PreciseBN batches grow with train.precise_bn_examples; FLOPs of one run) of
    `cell`, from one run traced once: an operation on the shared data alone (the evaluation's padding of a split)
    is not repeated per run, so its values are counted once however many runs there are (`_peak_bytes`)."""
    if PROTOCOLS[cell.protocol].split(config).axis is not None:
        # Each device holds every run with its share of the batch, the memory of a one-device cell at that batch;
        # their steps together are the whole batch's, which `run_flops` scales to.
        cell = dataclasses.replace(cell, protocol=BASELINE)
    n_train = len(dataset.train_x)
    training = make_training(config, cell, dataset.num_classes, n_train)
    args = run_args(training, plan(config, cell).arrays()[1], data)
    epoch, per_run = epoch_jaxpr(training, args, grid=False)
    finish = jax.make_jaxpr(training.finish)(*args).jaxpr
    programs = []
    for program in (epoch, finish):
        one, two = (_peak_bytes(program, runs, per_run) for runs in (1, 2))
        programs.append((two - one, 2 * one - two))
    return programs, _work(epoch, finish, config, cell, n_train)


def run_args(training, values: dict, data: Data) -> tuple:
    """The abstract arguments (seed, values, data, state) of one run as itself, outside any grid; `values` gives
    each value axis's dtype. Traced from these, a run has the FLOPs and bytes of a vmapped grid of one run (each
    committed config's cells: the same FLOPs, bytes within 0.001%) in a third of the time: batching its nested
    loops' bodies made a cell's trace take 0.46-2.2 s, against 0.16-0.92."""
    seed = jax.ShapeDtypeStruct((), np.uint32)
    one = {key: jax.ShapeDtypeStruct((), v.dtype) for key, v in values.items()}
    return seed, one, data, jax.eval_shape(training.start, seed, one, data)


def grid_args(training, values: dict, data: Data, runs: int = 1) -> tuple:
    """The abstract arguments (seeds, values, data, state) of a grid of `runs` runs of one seed, `values` giving
    each value axis's dtype."""
    seeds = jax.ShapeDtypeStruct((1,), np.uint32)
    grid = {key: jax.ShapeDtypeStruct((runs,), v.dtype) for key, v in values.items()}
    return seeds, grid, data, jax.eval_shape(vmap_grid(training.start), seeds, grid, data)


def epoch_jaxpr(training, args: tuple, grid: bool = True):
    """(The jaxpr of one epoch of the runs of `args`: the grid of `grid_args` vmapped, or the one run of `run_args`
    (`grid=False`); its inputs' `per_run` flags for `_peak_bytes`)."""
    epoch = lambda s, v, d, st: training.epochs(s, v, d, st, 0, count=1)  # noqa: E731
    if grid:
        epoch = vmap_grid(epoch, per_run=(True,))
    # A run's own inputs: its values and its state; the seed (one for the grid) and the data are shared.
    per_run = [own for arg, own in zip(args, (False, True, False, True)) for _ in jax.tree.leaves(arg)]
    return jax.make_jaxpr(epoch)(*args).jaxpr, per_run


def _work(epoch, finish, config: Config, cell: Cell, n_train: int) -> Work:
    """One run's `Work` from its traced epoch (every step taken: a `lax.cond` around the first epoch's steps
    counts its taken branch) and its traced finish. Each branch that an epoch may skip counts at its largest (`max`)
    and not at all (`min`): the steps and the training set's evaluation by their scopes, the held-out evaluation
    as the rest."""
    steps, train_acc = (jaxpr_flops(epoch, max, scope) for scope in (STEP_SCOPE, TRAIN_ACC_SCOPE))
    every_epoch = jaxpr_flops(epoch, min) - sum(jaxpr_flops(epoch, min, s) for s in (STEP_SCOPE, TRAIN_ACC_SCOPE))
    tests = jaxpr_flops(epoch, max) - steps - train_acc - every_epoch
    cell_plan = plan(config, cell)
    per_example = steps / (cell_plan.steps(n_train).per_epoch * cell_plan.sgd_batch)
    return Work(per_example, every_epoch, train_acc, tests, jaxpr_flops(finish, max))


def _flop_text(flops: float) -> str:
    for unit, size in (("MFLOP", 1e6), ("GFLOP", 1e9), ("TFLOP", 1e12)):
        if flops < 1000 * size:
            return f"{flops / size:.3g} {unit}"
    return f"{flops / 1e15:,.3g} PFLOP"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:,.0f} s" if seconds >= 2 else f"{seconds:.1f} s"


def _peak_bytes(jaxpr, runs: int = 1, per_run: list[bool] | None = None) -> int:
    """The most bytes live at once while `jaxpr` runs in order, each value freed after its last use; a call or
    loop adds its body's own peak at that point (a loop's body once: its iterations reuse the memory).

    `jaxpr` is one run (or a grid of one), `per_run` flags its inputs that are the run's own; a value computed from any
    of those is the run's too (as vmap batches it), and counts `runs` times: the grid of `runs` runs."""
    own = {v for v, flag in zip(jaxpr.invars, per_run or ()) if flag}

    def size(v) -> int:
        return _var_bytes(v) * (runs if v in own else 1)

    last_use = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jax.extend.core.Var):
                last_use[v] = i
    for v in jaxpr.outvars:
        if isinstance(v, jax.extend.core.Var):
            last_use[v] = len(jaxpr.eqns)
    live = sum(map(size, (*jaxpr.invars, *jaxpr.constvars)))
    peak = live
    for i, eqn in enumerate(jaxpr.eqns):
        flags = [isinstance(v, jax.extend.core.Var) and v in own for v in eqn.invars]
        if any(flags):
            own.update(eqn.outvars)
        inner = max((_peak_bytes(sub, runs, inputs) for sub, inputs in _sub_jaxprs(eqn, flags)), default=0)
        live += sum(map(size, eqn.outvars))
        peak = max(peak, live + inner)
        dying = {
            v for v in (*eqn.invars, *eqn.outvars) if isinstance(v, jax.extend.core.Var) and last_use.get(v, i) <= i
        }
        live -= sum(map(size, dying))
    return peak


def _var_bytes(v) -> int:
    aval = v.aval
    return math.prod(aval.shape) * aval.dtype.itemsize if hasattr(aval, "shape") else 0


def _sub_jaxprs(eqn, flags: list[bool]):
    """Each jaxpr that `eqn` calls, with its inputs' `per_run` flags from `flags`, those of `eqn`'s inputs."""
    if eqn.primitive.name == "while":  # inputs: the condition's constants, the body's, then the loop's carry
        conds, bodies = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
        carry = flags[conds + bodies :]
        yield eqn.params["cond_jaxpr"].jaxpr, flags[:conds] + carry
        yield eqn.params["body_jaxpr"].jaxpr, flags[conds : conds + bodies] + carry
        return
    for param in eqn.params.values():
        for sub in param if isinstance(param, tuple) else (param,):
            inner = getattr(sub, "jaxpr", sub)
            if isinstance(inner, jax.extend.core.Jaxpr):
                # A scan's body or a call takes every input, a cond's branches all but the branch index.
                n = len(inner.invars)
                yield inner, flags[len(flags) - n :] if n <= len(flags) else [any(flags)] * n
