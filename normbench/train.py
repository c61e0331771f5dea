"""Pure training of one run, written so that a whole grid of runs is one `jit(vmap(...))`.

`make_train(config, cell, ...)` does the static setup of one `Cell` (model, norm, batch shape, step counts)
and returns `train(seed, values, data)`: a pure function of one run's seed, its `RunValues` (init scale,
learning rate) and the device-resident data. Epochs and steps are `lax.scan`s; each epoch's shuffling and
minibatches happen inside the compiled program, so there is no host round-trip per step.

The seed is kept apart from the other values because it alone decides the minibatches: vmapping the values
inside a vmap over seeds leaves every minibatch unbatched along the inner axis, so XLA computes the first layer
of all init scales as one wide matrix product instead of many small ones.

Randomness: a run's seed gives `PRNGKey(seed)`, split once into an init key and a data key. The init key draws
unit-scale weights that `init_scale` then multiplies, and the data key is split into one key per epoch, so runs
that share a seed see the same minibatches in the same order at every init scale and under every norm.

Sampling: `permutation` (the default) visits a fresh random order of the training set each epoch, dropping the
remainder that does not fill a batch; `replacement` draws every batch with replacement, as the textbook does.

Divergence: a run whose minibatch loss goes non-finite records the epoch in `diverged_epoch` (0 = never); it
keeps stepping, since vmapped siblings share the program but none of its values.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normbench.config import Cell, Config
from normbench.models import build_model, scale_kernels
from normbench.norms import NORMS

OPTIMIZERS: dict[str, Callable] = {
    "sgd": optax.sgd,
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "adam": optax.adam,
}


class RunValues(NamedTuple):
    """The value axes of a sweep other than the seed: scalars for one run, or arrays with a leading run axis."""

    init_scale: jax.Array
    learning_rate: jax.Array


class Data(NamedTuple):
    train_x: jax.Array
    train_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array


class TrainState(NamedTuple):
    params: dict
    batch_stats: dict
    opt_state: optax.OptState


class Metrics(NamedTuple):
    """Per-epoch metrics of one run (leading axis: epoch), accuracies in eval mode."""

    train_loss: jax.Array  # mean minibatch loss of the epoch, train mode
    train_acc: jax.Array  # on the whole training set after the epoch
    test_acc: jax.Array
    test_loss: jax.Array
    diverged_epoch: jax.Array  # scalar: first epoch (1-based) with a non-finite loss, 0 if none


def steps_per_epoch(config: Config, cell: Cell, n_train: int) -> int:
    return config.train.steps_per_epoch or n_train // cell.batch_size


def make_train(config: Config, cell: Cell, num_classes: int, n_train: int):
    norm = NORMS[cell.norm].make(config.norm)
    model = build_model(config.model, norm, num_classes)
    optimizer = optax.inject_hyperparams(OPTIMIZERS[config.train.optimizer])
    steps = steps_per_epoch(config, cell, n_train)
    batch = cell.batch_size
    epochs = config.train.epochs
    eval_batch = config.train.eval_batch_size

    def loss_fn(params, batch_stats, x, y):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates.get("batch_stats", batch_stats)

    def train_step(state: TrainState, x, y, tx):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, y
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state), loss

    def evaluate(state: TrainState, x, y):
        """Mean loss and accuracy in eval mode, in chunks of `eval_batch` with the padding masked out."""
        n = x.shape[0]
        chunks = -(-n // eval_batch)
        pad = chunks * eval_batch - n
        xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((chunks, eval_batch) + x.shape[1:])
        ys = jnp.pad(y, (0, pad)).reshape(chunks, eval_batch)
        mask = (jnp.arange(chunks * eval_batch) < n).reshape(chunks, eval_batch)

        def chunk(_, inputs):
            xc, yc, mc = inputs
            logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, xc, train=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yc)
            correct = jnp.argmax(logits, -1) == yc
            return None, (jnp.sum(jnp.where(mc, loss, 0.0)), jnp.sum(correct & mc))

        _, (losses, corrects) = jax.lax.scan(chunk, None, (xs, ys, mask))
        return losses.sum() / n, corrects.sum() / n

    def batches(key):
        if config.train.sampling == "replacement":
            return jax.random.randint(key, (steps, batch), 0, n_train)
        return jax.random.permutation(key, n_train)[: steps * batch].reshape(steps, batch)

    def init(values: RunValues, key, sample_x, tx) -> TrainState:
        variables = model.init(key, sample_x, train=False)
        params = scale_kernels(variables["params"], values.init_scale)
        return TrainState(params, variables.get("batch_stats", {}), tx.init(params))

    def train(seed: jax.Array, values: RunValues, data: Data) -> tuple[TrainState, Metrics]:
        tx = optimizer(learning_rate=values.learning_rate)
        init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
        state = init(values, init_key, data.train_x[:batch], tx)
        epoch_keys = jax.random.split(data_key, epochs)

        def epoch(carry, inputs):
            state, diverged_epoch = carry
            index, key = inputs

            def step(state, idx):
                return train_step(state, data.train_x[idx], data.train_y[idx], tx)

            state, losses = jax.lax.scan(step, state, batches(key))
            nonfinite = ~jnp.all(jnp.isfinite(losses))
            diverged_epoch = jnp.where((diverged_epoch == 0) & nonfinite, index + 1, diverged_epoch)
            _, train_acc = evaluate(state, data.train_x, data.train_y)
            test_loss, test_acc = evaluate(state, data.test_x, data.test_y)
            return (state, diverged_epoch), (losses.mean(), train_acc, test_acc, test_loss)

        (state, diverged_epoch), per_epoch = jax.lax.scan(
            epoch, (state, jnp.int32(0)), (jnp.arange(epochs), epoch_keys)
        )
        return state, Metrics(*per_epoch, diverged_epoch)

    return train

