"""Should a convolution's input gradient come from `unpatch`, formed once, or from autodiff's transpose of the
patches (`normbench.models.conv`, `ONCE_MAX_BATCH`)? Run it on a CPU, where the choice is made.

    python benchmarks/conv_input_gradient.py [--cells batch:2 batch:128 ...] [--runs 8] [--rounds 4]

For each cell (norm:batch) of `configs/small_batch.py` (sgd, `--runs` runs, an epoch of one pass over its training
images, at least `MIN_STEPS` steps), compiles the epoch twice in one process, with every convolution on one path
and then on the other, and runs the two `--rounds` times alternated. Prints each path's fastest epoch (its
evaluations, the same on both paths, included) over its model-steps, their ratio, and whether the two end at the
same bits (the sums are the same; the reductions reading them may sum in another order once XLA fuses them
otherwise).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from normbench.bench import SMALL_BATCH, CnnCell
from normbench.config import apply_overrides, load_config
from normbench.core.grid import cells, plan
from normbench.core.sweep import compile_cell, device_data
from normbench.data import load
from normbench.models import conv

PATHS = {"autodiff": -1, "unpatch, once": 1 << 30}  # ONCE_MAX_BATCH that puts every batch on the path
MIN_STEPS = 45  # at batch 128 a pass is 23 steps, which the epoch's evaluations would swamp
# The cells of docs/performance.md's table
CELLS = ("batch:2", "batch:8", "batch:32", "batch:64", "batch:128", "layer:2", "layer:8", "layer:32", "layer:128",
         "group:2", "group:8", "group:32", "group:128")  # fmt: skip


def epochs(norm: str, batch: int, runs: int, rounds: int) -> tuple[dict[str, float], bool, int]:
    """({path: fastest epoch in seconds}, whether the paths' states end equal, steps in the epoch)."""
    study = load_config(SMALL_BATCH)
    dataset = load(study.data)
    steps = max(MIN_STEPS, len(dataset.train_x) // batch)
    config = apply_overrides(study, CnnCell(norm, batch, runs, steps).overrides(len(dataset.train_x)))
    (cell,) = cells(config)
    seeds, values = plan(config, cell).arrays()
    data = device_data(dataset, config.train.precision)
    default, programs = conv.ONCE_MAX_BATCH, {}
    try:
        for path, limit in PATHS.items():
            conv.ONCE_MAX_BATCH = limit  # read while tracing, so each program keeps its own path
            programs[path] = compile_cell(config, cell, dataset, data).phases
    finally:
        conv.ONCE_MAX_BATCH = default
    states = {path: jax.block_until_ready(p.start(seeds, values, data)) for path, p in programs.items()}
    fastest = dict.fromkeys(programs, float("inf"))
    for _ in range(rounds):
        for path, program in programs.items():
            began = time.perf_counter()
            states[path] = jax.block_until_ready(program.epoch(seeds, values, data, states[path], np.int32(0)))[0]
            fastest[path] = min(fastest[path], time.perf_counter() - began)
    leaves = [jax.tree.leaves(state) for state in states.values()]
    same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(*leaves))
    return fastest, same, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS))
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    # The two programs of a cell share normbench's sources, which key the kept programs: keep none.
    os.environ["NORMBENCH_COMPILATION_CACHE"] = "0"
    print(f"{jax.devices()[0].device_kind}, {args.runs} runs, fastest of {args.rounds} alternated epochs")
    print("| norm | batch | steps | autodiff (epoch / model-steps, us) | unpatch, once | ratio | same bits |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.cells:
        norm, batch = spec.split(":")
        fastest, same, steps = epochs(norm, int(batch), args.runs, args.rounds)
        per_step = {path: seconds / steps / args.runs * 1e6 for path, seconds in fastest.items()}
        old, new = per_step.values()
        print(f"| {norm} | {batch} | {steps} | {old:.1f} | {new:.1f} | {new / old:.2f} | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
