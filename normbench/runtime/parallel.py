"""Devices and hosts: a sweep's grid spread over every device, and the data-parallel protocols' batch split.

Sweeps. With more than one device (every device of every process: `jax.devices()`), a cell's vmapped grid
(seeds x runs, `normbench.core.sweep.vmap_grid`) is laid over a 2-D `Mesh` ("seeds", "runs") with `NamedSharding`,
and each device trains its block of runs. Runs share nothing, so training needs no communication; only the
metrics are gathered at the end, replicated on every device (a few numbers per run and epoch), while the trained
states stay where they were trained. The mesh takes the factorization of the device count that pads the grid
least (ties shard the runs, the inner axis); each axis is padded to a multiple of its devices by repeating its
last value, and the padding is dropped from the results. In a chunked cell (`CellPlan.chunk_size`) the seed axis
stays whole, since `lax.map` steps through it. With one device a cell trains in phases instead
(`normbench.runtime.phases`).

Data parallel. The `per_device` and `sync` protocols train each run on a batch split over the "data" axis of a 1-D
mesh of `train.data_parallel` devices. The whole grid runs inside `jax.shard_map`: every device holds every run,
the data and each minibatch's indices, and takes its own share of each batch
(`normbench.protocols.BatchSplit.local`); gradients and losses are averaged over the axis, one all-reduce per step.
Norms see their device's examples only, so BatchNorm's statistics are per device, the GN paper's "images per GPU".
This is why it needs shard_map: under plain `jit` with the batch sharded, a Flax BatchNorm still takes its mean
over the whole logical batch and XLA inserts the all-reduces, silently giving SyncBN. Under `sync` a norm's batch
statistics name the axis (`BatchStats.axis_name`), so they are means over all devices' examples. Per-device running
statistics differ between devices; evaluation and the returned states use their mean over devices, which, an
exponential average being linear, equals averaging them after every step as ghost BatchNorm does. Evaluation is
replicated: every device evaluates the whole test set.

Hosts. After `initialize` (`normbench run --distributed`), `jax.devices()` spans every process. Each process
builds the same config and grid, places its share of each global array on its own devices
(`jax.make_array_from_callback`) and receives the replicated metrics; only process 0 writes (`on_writer`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from normbench.config import Config, ConfigError
from normbench.errors import UserError
from normbench.protocols import DATA, BatchSplit

SEEDS, RUNS = "seeds", "runs"


def check_devices(config: Config, splits: list[BatchSplit]) -> None:
    """Say before anything is compiled what the devices cannot do: the data-parallel protocols (the cells'
    `splits`) need `train.data_parallel` devices, and cells trained in phases (`train.checkpoint_every`,
    `train.diagnostics_at`) run as single-device programs."""
    parallel = any(split.axis is not None for split in splits)
    n, have = config.train.data_parallel, jax.device_count()
    phased = [k for k in ("checkpoint_every", "diagnostics_at") if getattr(config.train, k)]
    if phased and (parallel or have > 1):
        raise ConfigError(
            f"train.{phased[0]} runs single-device programs, but this run uses {max(n, have)} devices; "
            "unset it, or make one device visible (e.g. CUDA_VISIBLE_DEVICES=0) outside the data-parallel "
            "protocols"
        )
    if not parallel:
        return
    if n > have:
        raise ConfigError(
            f"train.data_parallel={n} needs {n} devices, but jax sees {have}; on a CPU, simulate them with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n}"
        )
    if jax.process_count() > 1 and n != have:
        raise ConfigError(f"across processes, train.data_parallel must use every device: set it to {have}, not {n}")


def data_mesh(devices: int) -> Mesh:
    return Mesh(np.asarray(jax.devices()[:devices]), (DATA,))


def grid_shape(n_seeds: int, n_runs: int, n_devices: int, chunked: bool) -> tuple[int, int]:
    """(devices along the seeds, devices along the runs): the factorization of `n_devices` that pads the grid
    least, ties going to the runs. Chunked seeds go through `lax.map` one slice at a time, so stay whole."""
    shapes = [(a, n_devices // a) for a in range(1, n_devices + 1) if n_devices % a == 0 and (a == 1 or not chunked)]
    return min(shapes, key=lambda s: (_round_up(n_seeds, s[0]) * _round_up(n_runs, s[1]), s[0]))


def grid_mesh(n_seeds: int, n_runs: int, chunked: bool) -> Mesh:
    devices = jax.devices()
    shape = grid_shape(n_seeds, n_runs, len(devices), chunked)
    return Mesh(np.asarray(devices).reshape(shape), (SEEDS, RUNS))


def lower_grid(grid: Callable, split: BatchSplit, chunked: bool, seeds: np.ndarray, values, data):
    """`jit(grid)` lowered for the devices: over `split`'s devices when it splits the batch, else the grid's runs
    spread over every device (`chunked`: the seeds go through `lax.map`). Its `.compile()` is called like `grid`:
    (seeds, values, data) -> (states, metrics)."""
    if split.axis is not None:
        mesh = data_mesh(split.devices)
        grid = jax.shard_map(grid, mesh=mesh, in_specs=P(), out_specs=P())
        return ShardedGrid(grid, mesh, None, None, seeds, values, data)
    mesh = grid_mesh(len(seeds), _runs(values), chunked)
    return ShardedGrid(grid, mesh, SEEDS, RUNS, seeds, values, data)


class ShardedGrid:
    """A grid lowered over a mesh whose seed and run axes are split over `seed_axis` and `run_axis` (None:
    replicated). Once compiled, a call pads and places the host's seeds and values, and returns the unpadded
    results."""

    def __init__(self, grid, mesh: Mesh, seed_axis, run_axis, seeds, values, data):
        self.shape = (len(seeds), _runs(values))
        self.padded = tuple(_round_up(n, mesh.shape[a] if a else 1) for n, a in zip(self.shape, (seed_axis, run_axis)))
        self.seeds = NamedSharding(mesh, P(seed_axis))
        self.values = NamedSharding(mesh, P(run_axis))
        self.replicated = NamedSharding(mesh, P())
        jitted = jax.jit(
            grid,
            in_shardings=(self.seeds, self.values, self.replicated),
            out_shardings=(NamedSharding(mesh, P(seed_axis, run_axis)), self.replicated),
        )
        abstract = (
            jax.ShapeDtypeStruct(self.padded[:1], np.asarray(seeds).dtype, sharding=self.seeds),
            jax.tree.map(lambda v: jax.ShapeDtypeStruct(self.padded[1:], v.dtype, sharding=self.values), values),
            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated), data),
        )
        self.lowered = jitted.lower(*abstract)
        self.compiled = None

    def compile(self) -> ShardedGrid:
        self.compiled = self.lowered.compile()
        return self

    def __call__(self, seeds, values, data):
        n_seeds, n_runs = self.padded
        seeds = place(_pad(np.asarray(seeds), n_seeds), self.seeds)
        values = jax.tree.map(lambda v: place(_pad(np.asarray(v), n_runs), self.values), values)
        states, metrics = self.compiled(seeds, values, jax.device_put(data, self.replicated))
        if self.padded == self.shape:
            return states, metrics
        return jax.tree.map(lambda x: x[: self.shape[0], : self.shape[1]], (states, metrics))


def _runs(values: dict) -> int:
    return len(next(iter(values.values())))


def place(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds whole: each process puts its devices' shards."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(host: np.ndarray) -> jax.Array:
    """`host` on every device (the data a sweep trains on); on one device, a plain transfer."""
    if jax.device_count() == 1:
        return jax.device_put(host)
    return place(np.asarray(host), NamedSharding(Mesh(np.asarray(jax.devices()), (DATA,)), P()))


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    """Repeat the last entry up to length n: padded runs are copies of a real one, so they train like it."""
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """Join a multi-process run (`jax.distributed.initialize`). With no arguments JAX reads the cluster's
    environment (SLURM, Open MPI, Kubernetes, Cloud TPU); elsewhere give all three."""
    if coordinator is not None:  # JAX reads the port after the last ':' unchecked: an IndexError without one
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 2**16:
            raise UserError(f"--coordinator {coordinator!r} is not HOST:PORT, e.g. host0:1234")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"cannot join the distributed run: {str(e).strip().splitlines()[0]}") from e


def is_writer() -> bool:
    """Process 0 writes the results; the others only train."""
    return jax.process_index() == 0


def on_writer(action: Callable[[], None]) -> None:
    """Run `action` on process 0 only. When it raises UserError there, every process raises, so that none
    goes on to wait in a collective for a process that has stopped."""
    error = None
    if is_writer():
        try:
            action()
        except UserError as e:
            error = e
    if jax.process_count() > 1:
        failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if failed and error is None:
            raise UserError("process 0 stopped before training; its log says why")
    if error is not None:
        raise error


def from_writer(values: np.ndarray) -> np.ndarray:
    """Process 0's `values` on every process: what it alone read from the results directory."""
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.broadcast_one_to_all(values))
