"""A cell trained epoch by epoch: the grid's `Training` phases (`normbench.core.train`) compiled as three programs,
`start` (initialise every run), `epoch` (train one epoch, the epoch's index an argument) and `finish` (the
after-training evaluations), and the host calling `epoch` once per epoch. Every single-device cell trains this way,
for what the host can do between epochs without a callback inside the program:

- tell progress listeners each epoch as it ends (a program holding a `jax.debug.callback` is kept by neither
  of the caches below, so a warm run at a terminal would compile again);
- save a checkpoint (`train.checkpoint_every`) and record layer diagnostics (`train.diagnostics_at`);
- resume from a save and compute exactly the bits an uninterrupted run computes: the same programs run in both;
- stop at the end of an epoch when asked (`normbench.runtime.stopping`), its state saved for the resume.

Each program is kept compiled (`normbench.runtime.programs`), so a warm run neither traces nor compiles.
On a CPU, `start` and `finish` are compiled with less of LLVM's optimization (`QUICK_COMPILE`).
The epoch loop on the host costs one dispatch per epoch: within the noise of the machine against one program for
all epochs (`benchmarks/progress_overhead.py`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import Config
from normbench.runtime.programs import CompiledGrid, KeptGrid
from normbench.runtime.stopping import Stopped, StopRequest

# `start` and `finish` run once: `start` is mostly the PRNG's integer rounds, `finish` a few forward passes, on
# which LLVM's full optimization (level 3) spends more of a cold run compiling than it saves running; at level 1
# each model's `start` and `finish` compute the same bits (`tests/test_programs.py` checks it). The epoch program
# stays at XLA's default: below it, its reductions compute different bits.
QUICK_COMPILE = {"xla_backend_optimization_level": 1}
QUICK_PHASES = ("start", "finish")


def compiler_options(phase: str) -> dict | None:
    """XLA's options for compiling `phase` (None: its defaults). Only measured on a CPU; a process that turned
    most optimizations off (as the tests do) compiles every phase lower still."""
    quick = phase in QUICK_PHASES and jax.default_backend() == "cpu"
    if quick and not jax.config.read("jax_disable_most_optimizations"):
        return QUICK_COMPILE
    return None


@dataclass
class Phases:
    start: Callable
    epoch: Callable
    finish: Callable
    diagnose: Callable | None
    diagnostics_shape: object
    trace_s: float  # tracing and lowering every phase, or loading the kept executables (`KeptGrid`)
    compile_s: float  # what was left of XLA's compilation once every phase was lowered


def compile_phases(training, vmap_grid: Callable, config: Config, seeds, values, data, key: str | None) -> Phases:
    """Each of `training`'s phases over the grid (`vmap_grid(phase, per_run)`), compiled for one device; `key`
    (`normbench.runtime.programs.program_key`, None: not kept) names the cell's programs in the cache."""
    started = time.perf_counter()
    grids = {
        "start": (vmap_grid(training.start), ()),
        "epoch": (vmap_grid(functools.partial(training.epochs, count=1), per_run=(True, False)), ("state", 0)),
        "finish": (vmap_grid(training.finish, per_run=(True,)), ("state",)),
    }
    if config.train.diagnostics_at:
        grids["diagnose"] = (vmap_grid(training.diagnose, per_run=(True,)), ("state",))
    programs = {name: KeptGrid(key and f"{key}-{name}") for name in grids}
    cold = not all(program.kept for program in programs.values())  # a warm run traces nothing, not even for shapes
    rest = {"state": jax.eval_shape(grids["start"][0], seeds, values, data), 0: np.int32(0)} if cold else {}
    # XLA compiles each phase, without the GIL, while Python traces the next: on 2 cores a cold cell of the
    # small-batch CNN (BN, batch 2, 8 runs) waited 9.1-9.9 s for its programs, against 9.7-10.8 s with every
    # phase lowered first (4 alternated processes); the programs are the same.
    with ThreadPoolExecutor(1, "xla-compile") as compiler:
        compiling = {}
        for name, (grid, extra) in grids.items():
            if cold:
                # The epoch program writes the runs' new state over the old one, which the host never reads again.
                donate = (3,) if name == "epoch" else ()
                programs[name].lower(grid, (seeds, values, data, *(rest[r] for r in extra)), donate=donate,
                                     options=compiler_options(name))  # fmt: skip
            compiling[name] = compiler.submit(programs[name].compile)
        traced = time.perf_counter()
        compiled = {name: future.result() for name, future in compiling.items()}
    done = time.perf_counter()
    shape = compiled["diagnose"].output_shapes() if "diagnose" in compiled else None
    return Phases(compiled["start"], compiled["epoch"], compiled["finish"], compiled.get("diagnose"), shape,
                  traced - started, done - traced)  # fmt: skip


PROGRAMS = ("start", "epoch", "finish", "diagnose")


def phases_payloads(phases: Phases) -> dict[str, bytes] | None:
    """Each compiled phase as bytes that another process loads (`phases_from_payloads`); None where one of them
    cannot travel (`CompiledGrid.payload`)."""
    programs = {name: getattr(phases, name) for name in PROGRAMS if getattr(phases, name) is not None}
    payloads = {name: program.payload() for name, program in programs.items()}
    return None if None in payloads.values() else payloads


def phases_from_payloads(payloads: dict[str, bytes]) -> Phases:
    """The phases that `phases_payloads` sent, loaded in this process; without the shape of the diagnostics, which
    only checkpoints read."""
    loaded = {name: CompiledGrid.from_payload(payloads[name]) if name in payloads else None for name in PROGRAMS}
    return Phases(**loaded, diagnostics_shape=None, trace_s=0.0, compile_s=0.0)


def run_phases(phases: Phases, config: Config, seeds, values, data, checkpoints=None, on_epoch=None,
               stop: StopRequest | None = None):  # fmt: skip
    """(final run states, per-epoch metrics, after-training metrics, {epoch: diagnostics}). With `checkpoints`
    (a `normbench.results.resume.CellCheckpoints`), resume from its latest save and save every
    `train.checkpoint_every` epochs. `on_epoch(n, metrics)` hears as each epoch ends that n epochs are trained,
    with epoch n's `EpochMetrics` of the grid, once they are computed. Once `stop` is asked, the epoch under way
    is the last: its state is saved (with `checkpoints`) and `Stopped` raised, unless it was the cell's last."""
    train = config.train
    state = phases.start(seeds, values, data)
    trained, done, diagnosed = 0, [], {}
    saved = checkpoints.latest(state, phases.diagnostics_shape, train.diagnostics_at) if checkpoints else None
    if saved is not None:
        trained, state, done, diagnosed = saved
    elif 0 in train.diagnostics_at:
        diagnosed[0] = phases.diagnose(seeds, values, data, state)
    for epoch in range(trained + 1, train.epochs + 1):
        state, per_epoch = phases.epoch(seeds, values, data, state, np.int32(epoch - 1))
        done.append(per_epoch)
        if epoch in train.diagnostics_at:
            diagnosed[epoch] = phases.diagnose(seeds, values, data, state)
        saved = checkpoints is not None and train.checkpoint_every and epoch % train.checkpoint_every == 0
        if saved and epoch < train.epochs:
            checkpoints.save(epoch, state, done, diagnosed)
        if on_epoch is not None:
            on_epoch(epoch, jax.tree.map(lambda m: m[..., 0], jax.block_until_ready(per_epoch)))
        if stop is not None and stop.asked and epoch < train.epochs:
            if checkpoints is not None and not saved:
                checkpoints.save(epoch, state, done, diagnosed)
            raise Stopped
    per_epoch = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *done)
    return state, per_epoch, phases.finish(seeds, values, data, state), diagnosed
