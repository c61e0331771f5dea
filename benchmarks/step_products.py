"""How far can one cell's training step come to the FLOP floor on this machine, by its matrix products alone?

    python benchmarks/step_products.py [--config configs/small_batch.py] [--set KEY=VALUE ...] [--repeats 30]

`normbench bench` sets a cell's time beside its floor, its FLOPs over the machine's matmul peak (one large square
product). The floor assumes every product runs at that peak. This traces the cell's grid, takes the dot products
inside one training step's named scope (`normbench.flops.dot_equations`) with the shapes and batching XLA sees
under `vmap`, and times them alone, on random operands, in one jitted program: what
the step's products cost with nothing else around them. The rest of a step (the norms' sums, the convolutions'
patches and their transposes, elementwise work) is not products, and its floor is the memory's: the script also
times one in-place pass (read and write) over arrays of `--pass-mb` megabytes.

The defaults are the small-batch study's BatchNorm cell at batch 128 with 8 runs, as `normbench bench --cases cnn`
times it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import timeit
from pathlib import Path

import jax
import jax.numpy as jnp

from normbench.bench import measure_peak
from normbench.config import apply_overrides, load_config
from normbench.core.budget import abstract_data, epoch_jaxpr, grid_args
from normbench.core.grid import cells, plan
from normbench.core.train import STEP_SCOPE, make_training, precision_scope
from normbench.data import load
from normbench.flops import dot_equations, matmul_flops

ROOT = Path(__file__).resolve().parent.parent
# BN at batch 128, 8 runs (2 seeds x 4 rates), the bench's cell; one epoch of 2 steps, since only a step is traced.
CELL = ["sweep.norms=batch,", "sweep.batch_sizes=128,", "sweep.seeds=0,1", "train.epochs=1", "train.min_steps=none",
        "train.steps_per_epoch=2"]  # fmt: skip


def products_program(eqns: list):
    """A jitted function of one operand pair per equation that computes every product as the step does."""

    def run(operands):
        return [
            jax.lax.dot_general(
                a,
                b,
                e.params["dimension_numbers"],
                precision=e.params["precision"],
                preferred_element_type=e.params["preferred_element_type"],
            )
            for (a, b), e in zip(operands, eqns)
        ]

    return jax.jit(run)


def pass_seconds(megabytes: float, repeats: int) -> float:
    """One in-place pass (read, scale, write) over `megabytes` of float32, the fastest of `repeats` programs of 20."""
    x = jnp.ones((int(megabytes * 2**20) // 4,), jnp.float32)
    passes = jax.jit(lambda x: jax.lax.fori_loop(0, 20, lambda _, x: x * 1.0001 + 1.0, x))
    passes(x).block_until_ready()
    return min(timeit.repeat(lambda: passes(x).block_until_ready(), number=1, repeat=repeats)) / 20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "small_batch.py"))
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        help="overrides that leave one cell (default: BN at batch 128, 8 runs)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--pass-mb", default="4,55", help="array sizes for the in-place pass, in MB")
    args = parser.parse_args(argv)
    config = apply_overrides(load_config(Path(args.config)), CELL if args.set is None else args.set)
    (cell,) = cells(config)
    dataset = load(config.data)
    runs = plan(config, cell).run_count
    data = abstract_data(dataset, config.train.precision)
    with precision_scope(config.train.precision):
        training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
        jaxpr, _ = epoch_jaxpr(training, grid_args(training, plan(config, cell).arrays()[1], data, runs))
        eqns = dot_equations(jaxpr, STEP_SCOPE)
        keys = iter(jax.random.split(jax.random.key(0), 2 * len(eqns)))
        operands = [tuple(jax.random.normal(next(keys), v.aval.shape, v.aval.dtype) for v in e.invars) for e in eqns]
        program = products_program(eqns)
        jax.block_until_ready(program(operands))
        seconds = min(timeit.repeat(lambda: jax.block_until_ready(program(operands)), number=1, repeat=args.repeats))
    flops = matmul_flops(program, operands)
    peak = measure_peak()
    floor = flops / (peak * 1e9)
    print(
        f"{cell.model}, {cell.norm}, batch {cell.batch_size}, {runs} runs vmapped: one step's {len(eqns)} "
        f"products, {flops / 1e6:.0f} MFLOP; measured peak {peak:.0f} GFLOP/s, a floor of {floor * 1e3:.2f} ms\n"
    )
    print("| what | ms | GFLOP/s | over the step's floor |")
    print("| --- | --- | --- | --- |")
    print(f"| the step's products alone | {seconds * 1e3:.2f} | {flops / seconds / 1e9:.0f} | {seconds / floor:.2f} |")
    for megabytes in (float(m) for m in args.pass_mb.split(",")):
        each = pass_seconds(megabytes, max(1, args.repeats // 10))
        print(f"| one in-place pass over {megabytes:g} MB | {each * 1e3:.2f} | | {each / floor:.2f} |")


if __name__ == "__main__":
    main()
