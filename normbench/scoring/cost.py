"""The cost test: a norm's training step time over no norm's, for the battery's CNN and ViT (`COST_MODELS`).

Both programs are the engine's own epoch (`normbench.core.train.make_training`, one run, float32), compiled in this
process; each round times one epoch of each, the order alternating from round to round, so that the machine's
drift (another job starting, a core's clock) falls on both alike. A round's ratio is the measure's value; its
interval is over the rounds. After its steps the epoch evaluates a training set of a few batches (`cost_config`),
which both programs do, so the ratio is the steps' to within about 1%.
"""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Callable

import jax
import numpy as np

from normbench.core.grid import cells, plan
from normbench.core.sweep import device_data, vmap_grid
from normbench.core.train import make_training, precision_scope
from normbench.data import load
from normbench.scoring.battery import COST_MODELS, NO_NORM, cost_config, for_norms

COLUMNS = ("model", "round", "steps", "norm_s", "none_s", "ratio")


def epoch_timer(config, dataset, data) -> Callable[[], float]:
    """Seconds of the first epoch of `config`'s one run, from its initial state each call: every timing does the
    same work, where a run trained on would drift (its loss toward 0, its arithmetic toward other numbers)."""
    cell = cells(config)[0]
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    seeds, values = plan(config, cell).arrays()
    start = jax.jit(vmap_grid(training.start))
    epoch = jax.jit(vmap_grid(functools.partial(training.epochs, count=1), per_run=(True, False)), donate_argnums=3)
    first = np.int32(0)  # of 2 epochs: not the last, so the held-out sets are never evaluated

    def timed() -> float:
        state = jax.block_until_ready(start(seeds, values, data))
        began = time.perf_counter()
        jax.block_until_ready(epoch(seeds, values, data, state, first))
        return time.perf_counter() - began

    timed()  # compiles, and the first call's allocations are not a step's
    return timed


class CostTest:
    """Times norms against no norm, model by model; no norm's programs are compiled once per process."""

    def __init__(self, quick: bool, rounds: int):
        self.quick, self.rounds = quick, rounds
        self._references: dict[str, Callable[[], float]] = {}

    def run(self, norm: str) -> str:
        """`norm`'s timings as a table (`COLUMNS`): one row per model and round."""
        rows = []
        with precision_scope("float32"):
            for model in (m for m in COST_MODELS if not m.skips(norm)):
                config = cost_config(model, self.quick)
                dataset = load(config.data)
                data = device_data(dataset)
                if model.test not in self._references:
                    self._references[model.test] = epoch_timer(for_norms(config, (NO_NORM,)), dataset, data)
                mine, reference = epoch_timer(for_norms(config, (norm,)), dataset, data), self._references[model.test]
                for round_ in range(self.rounds):
                    order = (mine, reference) if round_ % 2 == 0 else (reference, mine)
                    seconds = {timer: timer() for timer in order}
                    steps = config.train.steps_per_epoch
                    per_step = [f"{seconds[timer] / steps:.6g}" for timer in (mine, reference)]
                    rows.append([model.test, round_, steps, *per_step, f"{seconds[mine] / seconds[reference]:.6g}"])
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([COLUMNS, *rows])
        return out.getvalue()


def ratios(text: str, model: str) -> dict[int, float]:
    """A norm's timings table (`CostTest.run`) as {round: ratio} for one model."""
    rows = csv.DictReader(text.splitlines())
    return {int(row["round"]): float(row["ratio"]) for row in rows if row["model"] == model}
