"""What training a cell epoch by epoch costs, and what telling progress between the epochs costs: one cell of the
init-scale study (BatchNorm, 48 runs, 20 epochs) trained alternately in one process, so all see the same machine,
three ways: as one program for all epochs ("whole", what a grid over several devices compiles), epoch by epoch as
every single-device cell trains ("phases"), and epoch by epoch with each epoch's metrics of all 48 runs brought to
the host as it ends, as the progress bar and TensorBoard hear them ("phases+progress").

    PYTHONPATH=. python benchmarks/progress_overhead.py [repeats]

Prints each one's median wall-clock and CPU time and the median over rounds of its ratios to "whole" and to
"phases"; per-epoch progress is worth having only while "phases+progress" stays within 2% of both.
"""

import statistics
import sys
import time

import jax
import numpy as np

from configs.init_scale import get_config
from normbench.core.grid import cells, plan
from normbench.core.sweep import compile_cell, device_data, make_training, train_program, vmap_grid
from normbench.core.train import precision_scope
from normbench.data import load


def main(repeats: int = 7) -> None:
    config = get_config()
    dataset = load(config.data)
    cell = cells(config)[0]
    seeds, values = plan(config, cell).arrays()
    with precision_scope(config.train.precision):
        data = device_data(dataset, config.train.precision)
        training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
        whole = jax.jit(vmap_grid(training.train)).lower(seeds, values, data).compile()
        phases = compile_cell(config, cell, dataset, data)
        heard = []

        def to_host(epoch, metrics):
            heard.append((epoch, jax.tree.map(np.asarray, metrics)))

        runs = {
            "whole": lambda: whole(seeds, values, data),
            "phases": lambda: train_program(phases, config, cell, data)[0],
            "phases+progress": lambda: train_program(phases, config, cell, data, on_epoch=to_host)[0],
        }
        wall = {name: [] for name in runs}
        cpu = {name: [] for name in runs}
        for _ in range(repeats + 1):  # the first round warms every program up and is left out
            for name, train in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                jax.block_until_ready(train())
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    print(f"{cell.label()}: {config.train.epochs} epochs, {len(heard) // (repeats + 1)} epochs heard per round")
    # The machine is shared: each round's ratio pairs trainings a few seconds apart, and the median of the rounds'
    # ratios leaves out the rounds that other work disturbed. CPU time (all threads) is the work itself.
    for clock, times in (("wall", wall), ("cpu", cpu)):
        for base in ("whole", "phases"):
            ratios = {name: statistics.median(t / b for t, b in zip(times[name][1:], times[base][1:]))
                      for name in runs}  # fmt: skip
            shown = ", ".join(f"{name} {statistics.median(times[name][1:]):.3f} s (x{ratios[name]:.4f})"
                              for name in times)  # fmt: skip
            print(f"{clock}, median of {repeats} rounds, ratio to {base}: {shown}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
