"""What reporting each epoch from inside the compiled program costs: one cell of the init-scale study (BatchNorm,
48 runs, 20 epochs) compiled three ways, trained alternately in one process, so all see the same machine: through
`jax.export` as a sweep does without per-epoch progress ("exported"), traced straight to XLA ("traced": a program
with a host callback cannot be exported), traced with the `jax.debug.callback` on the epoch index ("callback"),
and with the callback that brings each epoch's metrics of all 48 runs out for TensorBoard ("metrics").

    PYTHONPATH=. python benchmarks/progress_overhead.py [repeats]

Prints each one's median wall-clock and CPU time and the median over rounds of its ratios to "exported" and to
"traced"; per-epoch progress is worth having only while "callback" and "metrics" stay within 2% of "traced" (the
program they replace once a callback is in it anyway) and of "exported".
"""

import statistics
import sys
import time

import jax

from configs.init_scale import get_config
from normbench.core import sweep
from normbench.core.grid import cells
from normbench.core.sweep import compile_cell, device_data, train_program
from normbench.data import load


def main(repeats: int = 7) -> None:
    config = get_config()
    dataset = load(config.data)
    data = device_data(dataset)
    cell = cells(config)[0]
    calls = []
    programs = {"exported": compile_cell(config, cell, dataset, data)}
    # "traced" is the callback's program without the callback: a lower_grid that never exports.
    exporting = sweep.lower_grid
    sweep.lower_grid = lambda *args: exporting(*args[:7], False)
    programs["traced"] = compile_cell(config, cell, dataset, data)
    sweep.lower_grid = exporting
    programs["callback"] = compile_cell(config, cell, dataset, data, on_epoch=calls.append)
    programs["metrics"] = compile_cell(config, cell, dataset, data, on_metrics=lambda *args: calls.append(args))
    wall = {name: [] for name in programs}
    cpu = {name: [] for name in programs}
    for _ in range(repeats + 1):  # the first round warms every program up and is left out
        for name, program in programs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(train_program(program, config, cell, data)[0])
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    print(f"{cell.label()}: {config.train.epochs} epochs, {len(calls) // (repeats + 1)} callbacks per round")
    # The machine is shared: each round's ratio pairs trainings a few seconds apart, and the median of the rounds'
    # ratios leaves out the rounds that other work disturbed. CPU time (all threads) is the work itself.
    for clock, times in (("wall", wall), ("cpu", cpu)):
        for base in ("exported", "traced"):
            ratios = {name: statistics.median(t / e for t, e in zip(times[name][1:], times[base][1:]))
                      for name in programs}  # fmt: skip
            shown = ", ".join(f"{name} {statistics.median(times[name][1:]):.3f} s (x{ratios[name]:.4f})"
                              for name in times)  # fmt: skip
            print(f"{clock}, median of {repeats} rounds, ratio to {base}: {shown}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
