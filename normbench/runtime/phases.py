"""A cell trained in phases, for sweeps that step in between epochs: checkpoints (`train.checkpoint_every`)
and layer diagnostics (`train.diagnostics_at`). The grid's `Training` phases (`normbench.core.train`) are
compiled one by one and the host runs the epochs in segments, saving and diagnosing between them; a cell
without either trains as one program instead (`normbench.core.sweep.compile_cell`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import Config


@dataclass
class Phases:
    start: Callable
    epochs: dict[int, Callable]  # segment length -> program
    finish: Callable
    diagnose: Callable | None
    diagnostics_shape: object


def stops(config: Config) -> list[int]:
    """The epochs after which a cell's phases hand back to the host: to checkpoint, to diagnose, at the end."""
    train = config.train
    points = {train.epochs, *(e for e in train.diagnostics_at if e > 0)}
    if train.checkpoint_every:
        points.update(range(train.checkpoint_every, train.epochs, train.checkpoint_every))
    return sorted(points)


def compile_phases(training, vmap_grid: Callable, config: Config, seeds, values, data) -> Phases:
    """Each of `training`'s phases over the grid (`vmap_grid(phase, per_run)`), compiled for one device."""
    start = jax.jit(vmap_grid(training.start))
    state = jax.eval_shape(start, seeds, values, data)
    lowered = {"start": start.lower(seeds, values, data)}
    for count in set(np.diff([0, *stops(config)]).tolist()):
        segment = jax.jit(vmap_grid(functools.partial(training.epochs, count=count), per_run=(True, False)))
        lowered[count] = segment.lower(seeds, values, data, state, np.int32(0))
    lowered["finish"] = jax.jit(vmap_grid(training.finish, per_run=(True,))).lower(seeds, values, data, state)
    diagnose = jax.jit(vmap_grid(training.diagnose, per_run=(True,)))
    shape = jax.eval_shape(diagnose, seeds, values, data, state) if config.train.diagnostics_at else None
    if shape is not None:
        lowered["diagnose"] = diagnose.lower(seeds, values, data, state)
    compiled = {key: program.compile() for key, program in lowered.items()}
    segments = {key: program for key, program in compiled.items() if isinstance(key, int)}
    return Phases(compiled["start"], segments, compiled["finish"], compiled.get("diagnose"), shape)


def run_phases(phases: Phases, config: Config, seeds, values, data, checkpoints=None, on_epochs=None):
    """(final run states, per-epoch metrics, after-training metrics, {epoch: diagnostics}). With `checkpoints`
    (a `normbench.results.resume.CellCheckpoints`), resume from its latest save and save every
    `train.checkpoint_every` epochs; the segments are the same whether or not a run was interrupted, so a resumed
    cell computes exactly what an uninterrupted one does. `on_epochs(n)` hears after each segment that n epochs
    are trained."""
    train = config.train
    state = phases.start(seeds, values, data)
    epoch, done, diagnosed = 0, [], {}
    saved = checkpoints.latest(state, phases.diagnostics_shape, train.diagnostics_at) if checkpoints else None
    if saved is not None:
        epoch, state, done, diagnosed = saved
    elif 0 in train.diagnostics_at:
        diagnosed[0] = phases.diagnose(seeds, values, data, state)
    for stop in (stop for stop in stops(config) if stop > epoch):
        state, per_epoch = phases.epochs[stop - epoch](seeds, values, data, state, np.int32(epoch))
        done.append(per_epoch)
        epoch = stop
        if epoch in train.diagnostics_at:
            diagnosed[epoch] = phases.diagnose(seeds, values, data, state)
        if checkpoints is not None and train.checkpoint_every and epoch % train.checkpoint_every == 0:
            if epoch < train.epochs:
                checkpoints.save(epoch, state, done, diagnosed)
        if on_epochs is not None:
            jax.block_until_ready(state)  # report the epochs trained, not just queued
            on_epochs(epoch)
    per_epoch = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *done)
    return state, per_epoch, phases.finish(seeds, values, data, state), diagnosed
