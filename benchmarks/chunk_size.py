"""Should a cell's grid train all its runs in one vmap, or a few seeds at a time (`train.chunk_size`)?

    python benchmarks/chunk_size.py [--config configs/images_per_statistic.py] [--rounds 2] [--steps 115]
        [--set KEY=VALUE ...]

For each model of the config, one BatchNorm cell at one learning rate (its seeds x ghost sizes), trained for one
epoch of `--steps` steps with every chunk size given, alternated over `--rounds` rounds in one process after one
warm-up call each; prints the median seconds of the epoch program and the time per model-step. Vmapping more runs
at once gives XLA wider products, but their activations outgrow the CPU's caches sooner: which wins depends on the
model, so it is measured, not assumed. `--set` overrides come last, so they can pick another cell: the small-batch
study's at batch 128 with all 20 runs is

    python benchmarks/chunk_size.py --config configs/small_batch.py --steps 60 --rounds 3 \
        --set sweep.batch_sizes=128, --set sweep.learning_rates=0.8,1.6,3.2,6.4
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from normbench.config import apply_overrides, load_config
from normbench.core.grid import cells, plan
from normbench.core.sweep import compile_cell, device_data
from normbench.core.train import precision_scope
from normbench.data import load


def epoch_seconds(config, cell, dataset, data) -> Callable[[], float]:
    """A function that trains one epoch of `cell` from its start and returns the seconds it took."""
    program = compile_cell(config, cell, dataset, data).phases
    seeds, values = plan(config, cell).arrays()

    def timed() -> float:
        state = jax.block_until_ready(program.start(seeds, values, data))
        began = time.perf_counter()
        jax.block_until_ready(program.epoch(seeds, values, data, state, np.int32(0)))
        return time.perf_counter() - began

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/images_per_statistic.py")
    parser.add_argument("--chunks", default="none,1", help="chunk sizes to compare, 'none' for one vmap")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=115)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applied after the cell's")
    args = parser.parse_args()
    base = load_config(args.config)
    chunks = [None if c == "none" else int(c) for c in args.chunks.split(",")]
    print("| model | runs | chunk_size | epoch s (median) | ms per model-step |")
    print("|---|---|---|---|---|")
    with precision_scope(base.train.precision):
        for model in base.sweep.models:
            compare(base, model, chunks, args.steps, args.rounds, args.set)


def compare(base, model: str, chunks: list, steps: int, rounds: int, extra: list[str]) -> None:
    """Print the rows of `model`'s BatchNorm cell at the config's first rate (unless `extra` sets others), at each of
    `chunks`."""
    timers, runs = {}, 0
    for chunk in chunks:
        config = apply_overrides(base, [
            f"sweep.models={model},", "sweep.norms=batch,", f"sweep.learning_rates={base.sweep.learning_rates[0]},",
            "train.epochs=1", f"train.min_steps={steps}", "train.diagnostics_at=()", f"train.chunk_size={chunk}",
            *extra,
        ])  # fmt: skip
        dataset = load(config.data)
        (cell,) = cells(config)
        seeds, values = plan(config, cell).arrays()
        runs = len(seeds) * len(values["init_scale"])
        timers[chunk] = epoch_seconds(config, cell, dataset, device_data(dataset, config.train.precision))
        timers[chunk]()  # warm-up
    times = {chunk: [] for chunk in chunks}
    for _ in range(rounds):
        for chunk in chunks:
            times[chunk].append(timers[chunk]())
    for chunk in chunks:
        median = statistics.median(times[chunk])
        print(f"| {model} | {runs} | {chunk or 'none'} | {median:.2f} | {1e3 * median / (runs * steps):.2f} |")


if __name__ == "__main__":
    main()
