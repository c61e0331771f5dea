"""How fast can this machine do the init-scale study's matrix products, with the study's shapes and nothing else?

    python benchmarks/matmul_floor.py [--config configs/init_scale.py] [--repeats 3]

`normbench bench` compares training with the floor FLOPs / peak, the peak being one large square product. An MLP
of 100-wide layers cannot reach that peak: its products are small. This builds, from the config's MLP and
sweep, a program of only the dot products one cell computes, shaped and batched as XLA sees them under `vmap`:
per SGD step the first layer as one product of the shared minibatch with every run's weights side by side, the
hidden and output layers as per-run batched products, forward, weight gradients and input gradients (none for
the data); after every epoch the forward products of evaluating the training set in chunks. The test set's
evaluations and the norms' elementwise work are left out. Each product's operands move with the loop, so none
is computed once and reused. `tests/test_benchmarks.py` checks that its FLOPs are those of a real cell without
a norm.

It times that program for one cell, for two cells side by side (as `normbench run` trains them on a CPU), and
the same products through numpy (OpenBLAS) for one cell. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normbench.bench import measure_peak
from normbench.config import Config, load_config
from normbench.core.grid import cells, plan
from normbench.data import load
from normbench.flops import matmul_flops

ROOT = Path(__file__).resolve().parent.parent


class Shapes:
    """One cell's product shapes: `runs` MLPs of `widths` (input, hidden..., classes)."""

    def __init__(self, config: Config, inputs: int, classes: int, n_train: int):
        cell = cells(config)[0]
        self.widths = (inputs, *config.model.hidden, classes)
        cell_plan = plan(config, cell)
        self.runs = len(cell_plan.run_values["init_scale"])
        self.batch = cell_plan.sgd_batch
        self.steps = cell_plan.steps(n_train).per_epoch
        self.epochs = config.train.epochs
        self.eval_batch = config.train.eval_batch_size
        self.eval_chunks = -(-n_train // self.eval_batch)

    def operands(self, seed: int = 0) -> tuple[np.ndarray, ...]:
        """A minibatch, the evaluation chunk, the first layer's weights side by side, the later layers' per run."""
        rng = np.random.default_rng(seed)
        w = self.widths
        later = tuple(rng.standard_normal((self.runs, a, b), np.float32) * 0.1 for a, b in zip(w[1:], w[2:]))
        return (
            rng.random((self.batch, w[0]), np.float32),
            rng.random((self.eval_batch, w[0]), np.float32),
            rng.standard_normal((w[0], self.runs * w[1]), np.float32) * 0.1,
            *later,
        )


def program(shapes: Shapes):
    """`f(x, eval_x, first, *later)`: the cell's products, in `lax.scan`s over epochs, steps and eval chunks."""
    runs = shapes.runs

    def forward(x, first, later):
        """Every layer's input, per run, and the output."""
        h = (x @ first).reshape(x.shape[0], runs, -1).transpose(1, 0, 2)
        inputs = [h]
        for w in later:
            h = jnp.einsum("rbi,rio->rbo", h, w)
            inputs.append(h)
        return inputs[:-1], h

    def step(carry, _):
        x, first, later = carry
        inputs, out = forward(x, first, later)
        g, grads = out, []
        for h, w in zip(reversed(inputs), reversed(later)):
            grads.append(jnp.einsum("rbi,rbo->rio", h, g))
            g = jnp.einsum("rbo,rio->rbi", g, w)
        first_grad = x.T @ g.transpose(1, 0, 2).reshape(x.shape[0], -1)
        later = tuple(w - 1e-6 * dw for w, dw in zip(later, reversed(grads)))
        return (x + 1e-6, first - 1e-6 * first_grad, later), None

    def evaluate(carry, _):
        eval_x, first, later = carry
        _, out = forward(eval_x, first, later)
        return (eval_x + 1e-6 * out.mean(), first, later), None

    def epoch(carry, _):
        x, eval_x, first, later = carry
        (x, first, later), _ = jax.lax.scan(step, (x, first, later), None, length=shapes.steps)
        (eval_x, first, later), _ = jax.lax.scan(evaluate, (eval_x, first, later), None, length=shapes.eval_chunks)
        return (x, eval_x, first, later), None

    def cell(x, eval_x, first, *later):
        (_, eval_x, first, later), _ = jax.lax.scan(epoch, (x, eval_x, first, later), None, length=shapes.epochs)
        return eval_x, first, later

    return cell


def numpy_cell(shapes: Shapes, x, eval_x, first, *later) -> None:
    """The same products through numpy's BLAS, one after another."""
    runs = shapes.runs

    def forward(x):
        h = (x @ first).reshape(x.shape[0], runs, -1).transpose(1, 0, 2)
        inputs = [h]
        for w in later:
            h = np.matmul(h, w)
            inputs.append(h)
        return inputs[:-1], h

    for _ in range(shapes.epochs):
        for _ in range(shapes.steps):
            inputs, g = forward(x)
            for h, w in zip(reversed(inputs), reversed(later)):
                np.matmul(h.transpose(0, 2, 1), g)
                g = np.matmul(g, w.transpose(0, 2, 1))
            x.T @ g.transpose(1, 0, 2).reshape(x.shape[0], -1)
        for _ in range(shapes.eval_chunks):
            forward(eval_x)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "init_scale.py"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    config = load_config(Path(args.config))
    dataset = load(config.data)
    n_train = len(dataset.train_x)
    shapes = Shapes(config, math.prod(dataset.train_x.shape[1:]), dataset.num_classes, n_train)
    cell = jax.jit(program(shapes))
    host = [shapes.operands(seed) for seed in (0, 1)]
    operands = [tuple(jnp.asarray(a) for a in ops) for ops in host]
    flops = matmul_flops(cell, *operands[0])
    jax.block_until_ready(cell(*operands[0]))
    peak = measure_peak()

    def side_by_side():
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda ops: jax.block_until_ready(cell(*ops)), operands))

    rows = [
        ("XLA, one cell", flops, best_of(args.repeats, lambda: jax.block_until_ready(cell(*operands[0])))),
        ("XLA, two cells side by side", 2 * flops, best_of(args.repeats, side_by_side)),
        ("numpy (BLAS), one cell", flops, best_of(args.repeats, lambda: numpy_cell(shapes, *host[0]))),
    ]
    print(f"{shapes.runs} runs of an MLP {'-'.join(map(str, shapes.widths))}, batch {shapes.batch}, "
          f"{shapes.epochs} epochs of {shapes.steps} steps, {n_train} examples evaluated after each; "
          f"measured peak {peak:.0f} GFLOP/s\n")  # fmt: skip
    print("| products of | GFLOP | seconds | GFLOP/s | share of peak |")
    print("| --- | --- | --- | --- | --- |")
    for name, work, seconds in rows:
        print(f"| {name} | {work / 1e9:.0f} | {seconds:.2f} | {work / seconds / 1e9:.0f} | "
              f"{work / seconds / 1e9 / peak:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
