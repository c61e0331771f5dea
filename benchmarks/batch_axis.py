"""How should the `sgd` protocol sweep batch sizes: one compiled program per size, or one program with the batch
size as a vmapped value, every batch padded to the largest?

    python benchmarks/batch_axis.py [--epochs 1] [--seeds 5] [--batch-sizes 2,8,32,128]

Both train the same runs (the textbook MLP with BatchNorm, SGD, permutation sampling; `tests/test_benchmarks.py`
checks that they agree) and the table gives each one's compile and train time. The padded program fills each
step with copies of its batch (so every size must divide the largest): BatchNorm's statistics over whole copies
are the batch's own, and the loss counts the first copy alone. It must run as many steps as the smallest batch
needs, each as wide as the largest batch, for every run. It evaluates only
the test set each epoch (the per-size programs also evaluate the training set and, after training, BN's other
two modes), so its train time is a lower bound.

Measured on the 2-core CPU (compilation cache off), 5 seeds x batches 2, 8, 32, 128, when the padding was
further examples masked out of BatchNorm's statistics, at the same widths:
1 epoch: per size 12.7 s compile + 1.0 s train, padded 3.5 + 6.5 s; 8 epochs: per size 13.9 + 3.6 s, padded
3.9 + 56.3 s. The padded program's steps cost grows with epochs and the compiles do not, so for the study's
8 epochs one program per batch size wins, and the sweep hides most of its compiles behind training.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normbench.config import Config, DataConfig, ModelConfig, SweepConfig, TrainConfig
from normbench.core.grid import Cell
from normbench.core.sweep import compile_cell, device_data, train_program
from normbench.core.train import OPTIMIZERS, Data, evaluate
from normbench.data import load
from normbench.models import build_model, scale_kernels
from normbench.norms import NORMS, WHOLE_BATCH


def make_padded_train(config: Config, norm: str, num_classes: int, n_train: int):
    """train(seed, init_scale, learning_rate, batch_size, data) with batch_size a traced value."""
    widest, narrowest = max(config.sweep.batch_sizes), min(config.sweep.batch_sizes)
    if any(widest % b for b in config.sweep.batch_sizes):
        raise ValueError(f"batch sizes {config.sweep.batch_sizes} must divide the largest to pad with whole copies")
    max_steps = n_train // narrowest
    spec = NORMS[norm]
    model = build_model(
        "mlp",
        config.model,
        spec.make(config.norm, WHOLE_BATCH),
        num_classes,
        fuses_activation=spec.fuses_activation,
        standardize_weights=spec.standardizes_weights,
    )
    optimizer = OPTIMIZERS[config.train.optimizer]

    def loss_fn(params, batch_stats, x, y, first_copy, batch_size):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(jnp.where(first_copy, losses, 0.0)) / batch_size, updates["batch_stats"]

    def train(seed, init_scale, learning_rate, batch_size, data: Data):
        tx = optimizer(config.train, learning_rate)
        init_key, data_key, _ = jax.random.split(jax.random.PRNGKey(seed), 3)
        variables = model.init(init_key, data.train_x[:widest], train=False)
        params = scale_kernels(variables["params"], init_scale)
        state = (params, variables["batch_stats"], tx.init(params))
        first_copy = jnp.arange(widest) < batch_size
        steps = n_train // batch_size

        def epoch(state, key):
            order = jax.random.permutation(jax.random.split(key, 1)[0], n_train)

            def step(state, s):
                params, batch_stats, opt_state = state
                idx = order[(s * batch_size + jnp.arange(widest) % batch_size) % n_train]
                (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    params, batch_stats, data.train_x[idx], data.train_y[idx], first_copy, batch_size
                )
                updates, new_opt = tx.update(grads, opt_state, params)
                new = (optax.apply_updates(params, updates), new_stats, new_opt)
                active = s < steps
                return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state), jnp.where(active, loss, 0.0)

            state, losses = jax.lax.scan(step, state, jnp.arange(max_steps))
            variables = {"params": state[0], "batch_stats": state[1]}
            _, test_acc = evaluate(model, variables, data.test_x, data.test_y, config.train.eval_batch_size)
            return state, (losses.sum() / steps, test_acc)

        return jax.lax.scan(epoch, state, jax.random.split(data_key, config.train.epochs))[1]

    return train


def bench_config(epochs: int, seeds: int, batch_sizes: tuple[int, ...]) -> Config:
    return Config(
        name="batch_axis",
        data=DataConfig(n_train=1000),
        model=ModelConfig(hidden=(100, 100, 100)),
        train=TrainConfig(epochs=epochs),
        sweep=SweepConfig(
            norms=("batch",),
            batch_sizes=batch_sizes,
            init_scales=(1.0,),
            seeds=tuple(range(seeds)),
            learning_rates=(0.05,),
        ),  # fmt: skip
    )


def padded_grid(config: Config, norm: str, num_classes: int, n_train: int):
    """jit(vmap over seeds x batch sizes) of the padded trainer, with its inputs."""
    train = make_padded_train(config, norm, num_classes, n_train)
    seeds, sizes = np.meshgrid(
        np.asarray(config.sweep.seeds, np.uint32), np.asarray(config.sweep.batch_sizes, np.int32)
    )
    run = jax.vmap(lambda s, b, d: train(s, jnp.float32(1.0), jnp.float32(config.sweep.learning_rates[0]), b, d),
                   in_axes=(0, 0, None))  # fmt: skip
    return jax.jit(run), seeds.ravel(), sizes.ravel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch-sizes", default="2,8,32,128")
    args = parser.parse_args()
    config = bench_config(args.epochs, args.seeds, tuple(int(b) for b in args.batch_sizes.split(",")))
    dataset = load(config.data)
    data = device_data(dataset)
    rows = []
    total_compile = total_train = 0.0
    for b in config.sweep.batch_sizes:
        cell = Cell("mlp", "batch", "sgd", b)
        start = time.perf_counter()
        program = compile_cell(config, cell, dataset, data)
        compiled_at = time.perf_counter()
        train_program(program, config, cell, data)
        done = time.perf_counter()
        total_compile += compiled_at - start
        total_train += done - compiled_at
    rows.append(("one program per batch size", total_compile, total_train))
    fn, seeds, sizes = padded_grid(config, "batch", dataset.num_classes, len(dataset.train_x))
    start = time.perf_counter()
    compiled = fn.lower(seeds, sizes, data).compile()
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled(seeds, sizes, data))
    done = time.perf_counter()
    rows.append(("one padded program, batch vmapped", compiled_at - start, done - compiled_at))
    print(f"{len(config.sweep.seeds)} seeds x batch sizes {config.sweep.batch_sizes}, {config.train.epochs} epoch(s), "
          f"MLP {config.model.hidden} + BN, {jax.devices()[0].device_kind}")  # fmt: skip
    print(f"{'approach':<36} {'compile s':>10} {'train s':>10} {'total s':>10}")
    for name, c, t in rows:
        print(f"{name:<36} {c:>10.1f} {t:>10.1f} {c + t:>10.1f}")


if __name__ == "__main__":
    main()
