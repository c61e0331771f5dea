"""Pure training of one run, written so that a whole grid of runs is one `jit(vmap(...))`.

`make_train(config, cell, ...)` does the static setup of one `Cell` (model, norm, protocol, batch shape, step
counts) and returns `train(seed, values, data)`: a pure function of one run's seed, its `RunValues` and the
device-resident data. Epochs and steps are `lax.scan`s; each epoch's shuffling and minibatches happen inside
the compiled program, so there is no host round-trip per step.

The seed is kept apart from the other values because it alone decides the minibatches: vmapping the values
inside a vmap over seeds leaves every minibatch unbatched along the inner axis, so XLA computes the first layer
of all init scales as one wide matrix product instead of many small ones.

Randomness: a run's seed gives `PRNGKey(seed)`, split once into an init key and a data key. The init key draws
unit-scale weights that `init_scale` then multiplies, and the data key is split into one key per epoch, so runs
that share a seed see the same minibatches in the same order at every init scale and under every norm.

Sampling: `permutation` (the default) visits a fresh random order of the training set each epoch, dropping the
remainder that does not fill a batch; `replacement` draws every batch with replacement, as the textbook does.

`train.first_epoch_steps` shortens the first epoch (the textbook evaluates after its first step, then every 10);
`train.schedule` may decay the learning rate over the run's steps; `train.precision=float64` casts the data and
the parameters to float64 (the sweep switches on jax_enable_x64 around it, `precision_scope`).

Evaluation after each epoch, in eval mode: accuracy on the training set (after every `train.train_acc_every`-th
epoch and the last), and loss and accuracy on the test set and on the validation set held out of the training data
(after every `train.test_every`-th epoch and the last); NaN after the others. With `data.resample` each seed
first draws its own training and validation sets.
After the last epoch, norms with running statistics are also evaluated more ways (Wu & Johnson, 2021):
with each test batch's own statistics (test batches as large as the training batches, so their statistics are
as noisy), and with PreciseBN statistics, the mean of per-batch statistics over `train.precise_bn_examples`
training examples, the weights frozen (`train.precise_bn_variance="population"`: the variance over all of them).
The training set is evaluated in train mode too, its batches as large and their statistics formed as in training
(ghost groups of the run's size), nothing updated: beside `train_acc` on the running averages, the train/test
mismatch. And the test set with inference example weighting (Summers & Dinneen, 2020), each example's own
moments given the weight 1/g it had in the statistics of its ghost group of g (`ghost_size`), for the norms that
honour `norm.inference_example_weight` (`NormSpec.weights_examples`; NaN for the others).

Data parallel (the `per_device` and `sync` protocols): each phase runs inside a shard_map, each device stepping
on its share of every batch, the loss and so the gradients those of the whole batch;
the protocol's `normbench.protocols.BatchSplit` is the hook, and does nothing for the others.

Loss landscape (`train.landscape_steps`): at each epoch's first step, before it is taken, the loss and gradient of
its batch along the gradient (`normbench.core.landscape`), as the epoch's `landscape_*` metrics (NaN without it).

Divergence: a run whose minibatch loss goes non-finite records the epoch in `diverged_epoch` (0 = never); it
keeps stepping, since vmapped siblings share the program but none of its values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from normbench.config import Config, TrainConfig
from normbench.core.diagnostics import Diagnostics, layer_diagnostics
from normbench.core.grid import Cell, CellPlan, Steps, plan, with_values
from normbench.core.landscape import probe, unmeasured
from normbench.models import MODELS, ModelSpec, build_model, scale_kernels
from normbench.norms import NORMS, NormSpec
from normbench.protocols import PROTOCOLS, BatchSplit, Protocol

# A run's value axes other than the seed, by column (`normbench.core.grid.run_values`): `init_scale`,
# `learning_rate` (after any batch-size scaling), `ghost_size` (examples per batch statistic) and each swept
# value field by its dotted name; scalars for one run, arrays with a leading run axis for a grid.
RunValues = dict[str, jax.Array]


def _is_zero(value) -> bool:
    """A hyperparameter fixed at 0 by the config (not a swept, traced value): its term is left out of the program."""
    return isinstance(value, int | float) and value == 0


def _sgd(train: TrainConfig, learning_rate):
    momentum = None if _is_zero(train.momentum) else train.momentum
    sgd = optax.sgd(learning_rate, momentum=momentum)
    return sgd if _is_zero(train.weight_decay) else optax.chain(optax.add_decayed_weights(train.weight_decay), sgd)


def _adam(train: TrainConfig, learning_rate):
    return optax.adamw(learning_rate, weight_decay=train.weight_decay)


# name -> (train config, learning rate) -> optax transformation; any of their numbers may be traced, and the
# learning rate may be a schedule (step -> rate).
OPTIMIZERS: dict[str, Callable] = {"sgd": _sgd, "adam": _adam}


def warmup_cosine(peak, warmup_steps, total_steps: int) -> Callable:
    """step -> rate: linear from 0 to `peak` over `warmup_steps`, then a cosine decay to 0 at `total_steps`.
    Written out rather than optax's, which compares the (traced, vmapped) peak with 0 in Python. `warmup_steps`
    is an int, or a traced whole number when `train.warmup_fraction` is a value axis."""

    def rate(step):
        warm = jnp.where(warmup_steps > 0, jnp.minimum(step / jnp.maximum(warmup_steps, 1), 1.0), 1.0)
        t = jnp.clip((step - warmup_steps) / jnp.maximum(total_steps - warmup_steps, 1), 0.0, 1.0)
        return peak * warm * 0.5 * (1.0 + jnp.cos(jnp.pi * t))

    return rate


PRECISIONS = {"float32": jnp.float32, "float64": jnp.float64}
STEP_SCOPE = "train_step"  # the named scope of one training step, in the traced program
TRAIN_ACC_SCOPE = "train_accuracy"  # and of the training set's evaluation after an epoch


@contextlib.contextmanager
def precision_scope(precision: str):
    """float64 training needs jax_enable_x64, a process-wide switch (the cells' threads must see it too): on for
    the sweep, then back as it was."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", before or precision == "float64")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


class Data(NamedTuple):
    train_x: jax.Array
    train_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array
    val_x: jax.Array  # empty when the config holds out no validation set
    val_y: jax.Array


class TrainState(NamedTuple):
    params: dict
    batch_stats: dict
    opt_state: optax.OptState


class Metrics(NamedTuple):
    """Per-epoch metrics of one run (leading axis: epoch), accuracies in eval mode."""

    train_loss: jax.Array  # mean minibatch loss of the epoch, train mode
    train_acc: jax.Array  # on the whole training set after the epoch; NaN in the epochs train.train_acc_every skips
    test_acc: jax.Array
    test_loss: jax.Array
    val_acc: jax.Array  # on the validation set held out of the training data; NaN without one
    val_loss: jax.Array
    # Along the gradient at the epoch's first step (`normbench.core.landscape`); NaN without train.landscape_steps.
    landscape_loss_min: jax.Array
    landscape_loss_range: jax.Array
    landscape_grad_change_min: jax.Array
    landscape_grad_change_max: jax.Array
    landscape_beta: jax.Array
    test_acc_batch_stats: jax.Array  # scalar, after the last epoch; NaN for norms without running statistics
    test_acc_precise: jax.Array  # likewise
    train_acc_batch_stats: jax.Array  # likewise: the training set in train mode, statistics as training forms them
    test_acc_example_weighted: jax.Array  # likewise, and NaN for norms that do not weight examples
    diverged_epoch: jax.Array  # scalar: first epoch (1-based) with a non-finite loss, 0 if none


def loss_fn(model, params, batch_stats, x, y, axis_name=None):
    """The mean loss of the batch; with `axis_name`, x and y are one device's share of it, and the loss is the
    mean over the devices of that axis. Its gradient is then the whole batch's: shard_map sums the gradients of
    the replicated params over the devices."""
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
    return loss, updates.get("batch_stats", batch_stats)


def train_step(model, tx, state: TrainState, x, y, axis_name=None, backward_stats: bool = False):
    """One optimizer step. With `backward_stats` (the norm's `NormSpec.backward_stats`) the loss is differentiated
    with respect to the batch statistics too, and that gradient, the step a backward pass gives a running
    statistic (PowerNorm's nu), is added to them."""
    if not backward_stats:
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            model, state.params, state.batch_stats, x, y, axis_name
        )
    else:
        (loss, batch_stats), (grads, moved) = jax.value_and_grad(loss_fn, argnums=(1, 2), has_aux=True)(
            model, state.params, state.batch_stats, x, y, axis_name
        )
        batch_stats = jax.tree.map(jnp.add, batch_stats, moved)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state), loss


def forward_piece(spec: NormSpec, model: ModelSpec, runs: int) -> int | None:
    """The examples of each run per evaluation pass (None: a whole chunk) when a pass vmaps `runs` runs together:
    on a CPU, the model's `cpu_eval_piece`, or fewer, so that the pass holds at most `cpu_eval_pass` examples in
    all; on other backends, and for a norm that may normalize by its batch's statistics in eval mode
    (batch-dependent, with no running statistics, whose output then depends on the pass's size), one pass per
    chunk. A pass's size can move the last bits of a matrix product (the rows left over from its kernel's blocks),
    though not at the committed CNN studies' shapes: each of them computes its committed metrics with these
    pieces."""
    if (spec.batch_dependent and not spec.running_stats) or jax.default_backend() != "cpu":
        return None
    piece = model.cpu_eval_piece
    if piece is None or model.cpu_eval_pass is None:
        return piece
    return max(1, min(piece, model.cpu_eval_pass // runs))


def eval_logits(model, variables, x, piece: int | None = None):
    """The eval-mode logits of `x`, in passes of `piece` examples (the last padded; None: one pass)."""
    n = x.shape[0]
    if piece is None or n <= piece:
        return model.apply(variables, x, train=False)
    count = -(-n // piece)
    pieces = jnp.pad(x, [(0, count * piece - n)] + [(0, 0)] * (x.ndim - 1)).reshape((count, piece) + x.shape[1:])
    logits = jax.lax.map(lambda part: model.apply(variables, part, train=False), pieces)
    return logits.reshape((count * piece,) + logits.shape[2:])[:n]


def evaluate(model, variables, x, y, chunk_size: int, piece: int | None = None):
    """Mean loss and accuracy in eval mode, in chunks of `chunk_size` with the padding masked out, each chunk's
    logits in passes of `piece` examples (`eval_logits`). The loss sums over whole chunks whatever the pieces."""
    n = x.shape[0]
    chunks = -(-n // chunk_size)
    pad = chunks * chunk_size - n
    xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((chunks, chunk_size) + x.shape[1:])
    ys = jnp.pad(y, (0, pad)).reshape(chunks, chunk_size)
    mask = (jnp.arange(chunks * chunk_size) < n).reshape(chunks, chunk_size)

    def chunk(_, inputs):
        xc, yc, mc = inputs
        logits = eval_logits(model, variables, xc, piece)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yc)
        correct = jnp.argmax(logits, -1) == yc
        return None, (jnp.sum(jnp.where(mc, loss, 0.0)), jnp.sum(correct & mc))

    _, (losses, corrects) = jax.lax.scan(chunk, None, (xs, ys, mask))
    return losses.sum() / n, corrects.sum() / n


def over_batches(fn, xs, batch: int, piece: int | None):
    """`fn` of each batch along `xs`'s leading axis, stacked: batch after batch, or with `piece` (examples per
    pass, `forward_piece`), as many batches at once as fill a pass, vmapped, so that batches of a few examples
    are not a long scan of tiny passes."""
    together = (piece or batch) // batch
    if together <= 1:
        return jax.lax.scan(lambda _, inputs: (None, fn(inputs)), None, xs)[1]
    return jax.lax.map(fn, xs, batch_size=together)


def whole_batches(n: int, batch: int) -> jax.Array:
    """(batches, batch): the indices of n examples in consecutive batches; the remainder that does not fill a
    batch is left out."""
    return jnp.arange(n // batch * batch).reshape(-1, batch)


def own_statistics(probe, variables, x, y, rows, piece: int | None = None):
    """Each batch `x[rows[i]]` (rows: (batches, batch) indices) in train mode, normalized by its own statistics,
    nothing kept: per batch, how many of its examples `probe` classifies as `y` says, and the statistics its norms
    took of it. With `probe`'s norms' momentum at 0 the "running" statistics a train-mode pass returns are that
    batch's own; the logits do not depend on the momentum. `piece`: as in `over_batches`."""

    def one(batch_rows):
        logits, updates = probe.apply(variables, x[batch_rows], train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.argmax(logits, -1) == y[batch_rows]), updates["batch_stats"]

    return over_batches(one, rows, rows.shape[1], piece)


def batch_stats_accuracy(model, variables, x, y, batch: int, piece: int | None = None):
    """Accuracy with every batch of `batch` test examples normalized by its own statistics (train mode, nothing
    kept); the remainder that does not fill a batch is left out. `piece`: as in `over_batches`."""
    rows = whole_batches(x.shape[0], batch)
    correct, _ = own_statistics(model, variables, x, y, rows, piece)
    return correct.sum() / rows.size


def precise_batch_stats(probe, variables, xs, variance: str = "batch_mean", piece: int | None = None):
    """PreciseBN of the batches `xs` (batches, batch, ...), the weights frozen (`precise_statistics`). `probe` is
    the model with its norms' momentum at 0 (`own_statistics`). `piece`: as in `over_batches`."""
    x = xs.reshape((-1,) + xs.shape[2:])
    rows = whole_batches(x.shape[0], xs.shape[1])
    _, per_batch = own_statistics(probe, variables, x, jnp.zeros(x.shape[0], jnp.int32), rows, piece)
    return precise_statistics(per_batch, variance)


def precise_statistics(per_batch, variance: str = "batch_mean"):
    """PreciseBN: the mean over batches of each batch's own statistics (`per_batch`, batches first).

    `variance="population"` makes each norm's variance that of all the examples seen instead of the mean of the
    batches' (Wu & Johnson's naive estimate): the law of total variance over batches of equal size adds the
    variance of the batch means. A norm keeping sigma = sqrt(var + eps) (batch_renorm) gets sqrt of the mean of
    sigma^2 plus that variance; one keeping no mean (EvoNorm-B0) keeps the mean of its variances. Ghost groups
    within a batch reach this function as the mean over their groups, so the spread between them is left out."""
    precise = jax.tree.map(lambda s: s.mean(0), per_batch)
    if variance == "population":
        precise = _population(precise, per_batch)
    return precise


def _population(precise, per_batch):
    """`precise` with each layer's variance (or sigma) widened by the variance of its per-batch means."""
    if not isinstance(precise, dict):
        return precise
    if "mean" not in precise:
        return {key: _population(value, per_batch[key]) for key, value in precise.items()}
    between = per_batch["mean"].var(0)
    out = dict(precise)
    if "var" in precise:
        out["var"] = precise["var"] + between
    if "sigma" in precise:
        out["sigma"] = jnp.sqrt(jnp.square(per_batch["sigma"]).mean(0) + between)
    return out


def minibatches(key, count: int, n_train: int, batch: int, per_pass: int, sampling: str) -> jax.Array:
    """(count, batch) training indices: passes back to back, each the first `per_pass` whole batches of a fresh
    permutation (so no batch straddles two passes), or, with `sampling="replacement"`, draws with replacement."""
    if sampling == "replacement":
        return jax.random.randint(key, (count, batch), 0, n_train)
    # One vmapped permutation for all the passes (the same bits as one per pass), so tracing a run of many passes
    # costs one op, not one per pass.
    keys = jax.random.split(key, -(-count // per_pass))
    order = jax.vmap(lambda k: jax.random.permutation(k, n_train)[: per_pass * batch])(keys).reshape(-1)
    return order[: count * batch].reshape(count, batch)


def nans(like):
    """NaN arrays of the shapes and dtypes of `like`'s: the metrics of an evaluation that was not done."""
    return tuple(jnp.full(a.shape, jnp.nan, a.dtype) for a in like)


class RunState(NamedTuple):
    """What one run carries from epoch to epoch: with the seed and the epoch count, all a checkpoint needs."""

    train: TrainState
    diverged_epoch: jax.Array  # first epoch (1-based) with a non-finite loss, 0 if none


class EpochMetrics(NamedTuple):
    train_loss: jax.Array
    train_acc: jax.Array
    test_acc: jax.Array
    test_loss: jax.Array
    val_acc: jax.Array
    val_loss: jax.Array
    landscape_loss_min: jax.Array
    landscape_loss_range: jax.Array
    landscape_grad_change_min: jax.Array
    landscape_grad_change_max: jax.Array
    landscape_beta: jax.Array


class Training(NamedTuple):
    """One cell's training in three pure phases, so a sweep can stop between epochs to checkpoint:

    - `start(seed, values, data) -> RunState`;
    - `epochs(seed, values, data, state, first_epoch, *, count) -> (RunState, EpochMetrics)` runs epochs
      `first_epoch .. first_epoch + count - 1` (0-based; `count` is static, `first_epoch` may be traced);
    - `finish(seed, values, data, state) -> (test_acc_batch_stats, test_acc_precise, train_acc_batch_stats,
      test_acc_example_weighted)`, the evaluations after the last epoch;
    - `diagnose(seed, values, data, state) -> Diagnostics` of the layers (`normbench.core.diagnostics`).

    The data key is rederived from the seed in each phase rather than carried in the state: a vmapped state is
    batched along every run axis, and a minibatch drawn from a batched key would no longer be shared.
    """

    start: Callable
    epochs: Callable
    finish: Callable
    diagnose: Callable
    num_epochs: int

    def train(self, seed: jax.Array, values: RunValues, data: Data) -> tuple[TrainState, Metrics]:
        """Every epoch in one go: the composition of the three phases."""
        state = self.start(seed, values, data)
        state, per_epoch = self.epochs(seed, values, data, state, 0, count=self.num_epochs)
        return state.train, metrics(per_epoch, self.finish(seed, values, data, state), state)


def metrics(per_epoch: EpochMetrics, final: tuple[jax.Array, ...], state: RunState) -> Metrics:
    return Metrics(*per_epoch, *final, state.diverged_epoch)


def make_train(config: Config, cell: Cell, num_classes: int, n_train: int):
    """`train(seed, values, data) -> (TrainState, Metrics)`: one run of `cell`, all epochs."""
    return make_training(config, cell, num_classes, n_train).train


def grid_callback(callback: Callable) -> Callable:
    """`tell(index, seed, metrics)`, which calls `callback(index, seeds, metrics)` on the host from inside a
    compiled program: once for a whole vmapped grid, not once per run (`jax.debug.callback` alone unrolls over a
    batched argument, jax/_src/debugging.py). Each vmap of `tell` puts its axis in front of the batched arguments
    instead, so `seeds` is [seeds] and each of `metrics` [seeds, runs]; `index` stays unbatched."""

    @jax.custom_batching.custom_vmap
    def tell(index, seed, metrics):
        jax.debug.callback(callback, index, seed, metrics, ordered=False)
        return index

    @tell.def_vmap
    def batched(axis_size, in_batched, index, seed, metrics):
        # A metric that does not vary along this axis is repeated along it, so every metric has every grid axis.
        spread = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *x.shape)), metrics,
                              in_batched[2])  # fmt: skip
        return tell(index, seed, spread), False

    return tell


@dataclass(frozen=True)
class Setup:
    """What one cell's runs share, fixed before tracing: its plan, registry entries and the sizes derived from them.
    Every phase below is a pure function of a `Setup` and one run's seed, values and data."""

    plan: CellPlan
    steps: Steps
    spec: NormSpec
    protocol: Protocol
    split: BatchSplit
    num_classes: int
    n_train: int
    precise_steps: int  # batches of PreciseBN's statistics
    statistics_batch: int  # test batches normalized by their own statistics: the largest a training step's see

    @property
    def config(self) -> Config:
        return self.plan.config

    @property
    def eval_piece(self) -> int | None:
        """Examples of each run per evaluation pass (`forward_piece`)."""
        return forward_piece(self.spec, MODELS[self.plan.cell.model], self.plan.runs_at_once)


def setup(config: Config, cell: Cell, num_classes: int, n_train: int) -> Setup:
    cell_plan = plan(config, cell)
    run = cell_plan.config
    precise_steps = max(1, run.train.precise_bn_examples // cell_plan.sgd_batch)
    split = PROTOCOLS[cell.protocol].split(run)
    return Setup(cell_plan, cell_plan.steps(n_train), NORMS[cell.norm], PROTOCOLS[cell.protocol], split, num_classes,
                 n_train, precise_steps, max(cell_plan.stat_sizes))  # fmt: skip


def optimizer(s: Setup, values: RunValues):
    run, total_steps = with_values(s.config, values), s.steps.per_run
    rate = values["learning_rate"]
    if run.train.schedule == "cosine":
        warmup = run.train.warmup_fraction * total_steps  # traced when swept as a value axis
        warmup = round(warmup) if isinstance(warmup, float) else jnp.round(warmup)
        rate = warmup_cosine(rate, warmup, total_steps)
    return OPTIMIZERS[run.train.optimizer](run.train, rate)


def model_for(s: Setup, values: RunValues, **norm_options):
    norm_config = dataclasses.replace(with_values(s.config, values).norm, **norm_options)
    if norm_config.renorm_train_steps is None:  # batch_renorm's schedule is in fractions of this run's steps
        norm_config = dataclasses.replace(norm_config, renorm_train_steps=s.steps.per_run)
    return build_model(
        s.plan.cell.model,
        s.config.model,
        s.spec.make(norm_config, s.protocol.batch_stats(values["ghost_size"])),
        s.num_classes,
        fuses_activation=s.spec.fuses_activation,
        standardize_weights=s.spec.standardizes_weights,
        batch_dependent=s.spec.batch_dependent,
    )


def batches(s: Setup, key, count: int) -> jax.Array:
    return minibatches(key, count, s.n_train, s.plan.sgd_batch, s.steps.per_pass, s.config.train.sampling)


def seed_keys(seed) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(seed), 3)  # init, data, precise


def run_data(s: Setup, seed, data: Data) -> Data:
    """The data of the run: under `data.resample`, the seed's own draw of training and validation examples from
    the two sets together."""
    if not s.config.data.resample:
        return data
    pool_x = jnp.concatenate([data.train_x, data.val_x])
    pool_y = jnp.concatenate([data.train_y, data.val_y])
    # A key of its own (not one of `seed_keys`), so resampling leaves the runs' init and minibatch order alone.
    order = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), 3), len(pool_x))
    train, val = order[: s.n_train], order[s.n_train :]
    return data._replace(train_x=pool_x[train], train_y=pool_y[train], val_x=pool_x[val], val_y=pool_y[val])


def start_run(s: Setup, seed: jax.Array, values: RunValues, data: Data) -> RunState:
    model, tx = model_for(s, values), optimizer(s, values)
    variables = model.init(seed_keys(seed)[0], data.train_x[: s.plan.sgd_batch], train=False)
    # Flax draws float32 parameters whatever the input; float64 training casts them once, here.
    variables = jax.tree.map(lambda v: v.astype(PRECISIONS[s.config.train.precision]), variables)
    params = scale_kernels(variables["params"], values["init_scale"])
    return RunState(TrainState(params, variables.get("batch_stats", {}), tx.init(params)), jnp.int32(0))


@jax.named_scope(STEP_SCOPE)  # which FLOPs are the steps' (`normbench.core.budget`)
def batch_step(s: Setup, model, tx, data: Data, train_state: TrainState, idx):
    """One optimizer step on the training examples `idx` (under a data-parallel protocol, this device's share)."""
    idx = s.split.local(idx)
    x, y = data.train_x[idx], data.train_y[idx]
    return train_step(model, tx, train_state, x, y, s.split.axis, s.spec.backward_stats)


def landscape(s: Setup, model, data: Data, train_state: TrainState, values: RunValues, idx):
    """The loss along the gradient of the batch `idx` (an epoch's first), before its step is taken."""
    idx = s.split.local(idx)
    x, y = data.train_x[idx], data.train_y[idx]
    batch_loss = lambda p: loss_fn(model, p, train_state.batch_stats, x, y, s.split.axis)[0]  # noqa: E731
    sizes = jnp.asarray(s.config.train.landscape_steps, x.dtype) * values["learning_rate"]
    return probe(jax.value_and_grad(batch_loss), train_state.params, sizes)


def epoch_steps(s: Setup, model, tx, data: Data, train_state: TrainState, index, order):
    """The epoch's steps over the batches `order` as one `lax.scan`: (train state, losses, which steps were taken).
    The first epoch stops after `train.first_epoch_steps`; the index is unbatched, so skipped steps cost nothing."""
    steps = s.steps.per_epoch
    step = functools.partial(batch_step, s, model, tx, data)
    if (s.config.train.first_epoch_steps or steps) == steps:
        train_state, losses = jax.lax.scan(step, train_state, order)
        return train_state, losses, jnp.ones(steps, bool)
    taken = (index > 0) | (jnp.arange(steps) < s.config.train.first_epoch_steps)

    def maybe_step(train_state, inputs):
        idx, take = inputs
        skip = lambda state, _: (state, jnp.zeros((), data.train_x.dtype))  # noqa: E731
        return jax.lax.cond(take, step, skip, train_state, idx)

    train_state, losses = jax.lax.scan(maybe_step, train_state, (order, taken))
    return train_state, losses, taken


def after_due_epochs(s: Setup, index, every: int, measure: Callable):
    """`measure()` after epoch `index` (0-based) when it is an `every`-th epoch or the last; NaNs of its shape
    after the others. The epoch index is the same for every vmapped run, so this stays a branch: skipped work."""
    if every == 1:
        return measure()
    due = ((index + 1) % every == 0) | (index + 1 == s.config.train.epochs)
    return jax.lax.cond(due, measure, lambda: nans(jax.eval_shape(measure)))


def held_out(s: Setup, model, variables, data: Data, index):
    """(test loss, test accuracy, validation loss, validation accuracy) after epoch `index`: NaN where the epoch is
    not one that `train.test_every` evaluates, and for the validation set where none is held out."""
    eval_batch = s.config.train.eval_batch_size

    def measure():
        test = evaluate(model, variables, data.test_x, data.test_y, eval_batch, s.eval_piece)
        if not data.val_x.shape[0]:
            return *test, *nans(test)
        return *test, *evaluate(model, variables, data.val_x, data.val_y, eval_batch, s.eval_piece)

    return after_due_epochs(s, index, s.config.train.test_every, measure)


@jax.named_scope(TRAIN_ACC_SCOPE)  # which FLOPs are the training set's evaluation (`normbench.core.budget`)
def train_accuracy(s: Setup, model, variables, data: Data):
    return evaluate(model, variables, data.train_x, data.train_y, s.config.train.eval_batch_size, s.eval_piece)[1:]


def train_epoch(s: Setup, model, tx, seed, values: RunValues, data: Data, on_epoch, tell, state: RunState, inputs):
    """One epoch of one run, the scan body of `run_epochs`: its steps, then its evaluations in eval mode."""
    index, key = inputs
    if on_epoch is not None:
        # Given a batched value the callback would run once per run; the index alone keeps it one call.
        jax.debug.callback(on_epoch, index, ordered=False)
    order = batches(s, key, s.steps.per_epoch)
    if s.config.train.landscape_steps:
        surveyed = landscape(s, model, data, state.train, values, order[0])
    else:
        surveyed = unmeasured(data.train_x.dtype)
    train_state, losses, taken = epoch_steps(s, model, tx, data, state.train, index, order)
    nonfinite = ~jnp.all(jnp.isfinite(losses))
    first = (index + 1).astype(state.diverged_epoch.dtype)
    diverged_epoch = jnp.where((state.diverged_epoch == 0) & nonfinite, first, state.diverged_epoch)
    variables = {"params": train_state.params, "batch_stats": s.split.averaged(train_state.batch_stats)}
    (train_acc,) = after_due_epochs(s, index, s.config.train.train_acc_every,
                                    functools.partial(train_accuracy, s, model, variables, data))  # fmt: skip
    test_loss, test_acc, val_loss, val_acc = held_out(s, model, variables, data, index)
    loss = jnp.sum(jnp.where(taken, losses, 0.0)) / jnp.sum(taken)
    measured = EpochMetrics(loss, train_acc, test_acc, test_loss, val_acc, val_loss, *surveyed)
    if tell is not None:
        tell(index, seed, measured)
    return RunState(train_state, diverged_epoch), measured


def run_epochs(s: Setup, seed, values: RunValues, data: Data, state: RunState, first_epoch, *, count: int,
               on_epoch=None, tell=None):  # fmt: skip
    """Epochs `first_epoch .. first_epoch + count - 1` of one run as one `lax.scan` of `train_epoch`."""
    data = run_data(s, seed, data)
    epoch = functools.partial(train_epoch, s, model_for(s, values), optimizer(s, values), seed, values, data,
                              on_epoch, tell)  # fmt: skip
    epoch_keys = jax.random.split(seed_keys(seed)[1], s.config.train.epochs)
    epoch_keys = jax.lax.dynamic_slice_in_dim(epoch_keys, first_epoch, count)
    # Each device's running statistics move apart during the epochs and are averaged at their end: the same
    # means that averaging after every step gives, an exponential average being linear.
    state = state._replace(train=state.train._replace(batch_stats=s.split.per_device(state.train.batch_stats)))
    state, per_epoch = jax.lax.scan(epoch, state, (first_epoch + jnp.arange(count), epoch_keys))
    return state._replace(train=state.train._replace(batch_stats=s.split.averaged(state.train.batch_stats))), per_epoch


def precise_rows(s: Setup, seed) -> jax.Array:
    """The training examples of the batches that PreciseBN and the fluctuation diagnostics read, (batches,
    `statistics_batch`) indices (per_device: each device's share of the batches)."""
    return batches(s, seed_keys(seed)[2], s.precise_steps).reshape(-1, s.statistics_batch)


def precise_inputs(s: Setup, seed, data: Data):
    """The batches of `precise_rows`, (batches, `statistics_batch`, ...)."""
    return data.train_x[precise_rows(s, seed)]


def finish_run(s: Setup, seed, values: RunValues, data: Data, state: RunState):
    """The evaluations after the last epoch that `train.after_training` names, of norms with running statistics
    (NaN for the others, and for the evaluations left out)."""
    data = run_data(s, seed, data)
    missing = jnp.float32(jnp.nan)
    wanted = s.config.train.after_training if s.spec.running_stats else ()
    batch_stats_acc = precise_acc = train_batch_stats_acc = weighted_acc = missing
    if not wanted:
        return batch_stats_acc, precise_acc, train_batch_stats_acc, weighted_acc
    eval_batch, stats_batch, piece = s.config.train.eval_batch_size, s.statistics_batch, s.eval_piece
    model = model_for(s, values)
    variables = {"params": state.train.params, "batch_stats": state.train.batch_stats}
    # One train-mode pass reads the test set's batches, the training set's and PreciseBN's (those wanted): the
    # forward pass is compiled once, not three times, and each batch's results are the same bits.
    n_test = data.test_x.shape[0]
    own = {}
    if "batch_stats" in wanted:
        own["test"] = whole_batches(n_test, stats_batch)
        own["train"] = n_test + whole_batches(data.train_x.shape[0], stats_batch)
    if "precise" in wanted:
        own["precise"] = n_test + precise_rows(s, seed)
    if own:
        x, y = jnp.concatenate([data.test_x, data.train_x]), jnp.concatenate([data.test_y, data.train_y])
        rows = jnp.concatenate(list(own.values()))
        correct, per_batch = own_statistics(model_for(s, values, momentum=0.0), variables, x, y, rows, piece)
        ends = itertools.accumulate(len(part) for part in own.values())
        parts = {name: slice(end - len(own[name]), end) for name, end in zip(own, ends)}
    if "batch_stats" in wanted:
        batch_stats_acc = correct[parts["test"]].sum() / own["test"].size
        train_batch_stats_acc = correct[parts["train"]].sum() / own["train"].size
    tested = {}  # eval-mode passes over the test set: (example weight, running statistics)
    if "precise" in wanted:
        precise = precise_statistics(jax.tree.map(lambda b: b[parts["precise"]], per_batch),
                                     s.config.train.precise_bn_variance)  # fmt: skip
        tested["precise"] = (0.0, precise)
    if "example_weighted" in wanted and s.spec.weights_examples:
        tested["example_weighted"] = (1.0 / values["ghost_size"], variables["batch_stats"])
    if tested and not s.spec.weights_examples:
        # PreciseBN's alone (example weighting is for norms that weight examples), by the plain model.
        ((_, precise_stats),) = tested.values()
        _, precise_acc = evaluate(model, {**variables, "batch_stats": precise_stats}, data.test_x, data.test_y,
                                  eval_batch, piece)  # fmt: skip
    elif tested:
        # PreciseBN's evaluation and example weighting's as one pass over the two, compiled once: with a weight of
        # 0, example weighting normalizes by the statistics it is given (`normbench.norms.ghost_batch.
        # example_weighted`).
        def test_accuracy(inputs):
            weight, batch_stats = inputs
            weighted = model_for(s, values, inference_example_weight=weight)
            return evaluate(weighted, {**variables, "batch_stats": batch_stats}, data.test_x, data.test_y,
                            eval_batch, piece)[1]  # fmt: skip

        weights = jnp.stack([weight for weight, _ in tested.values()])
        stats = jax.tree.map(lambda *each: jnp.stack(each), *(stats for _, stats in tested.values()))
        accuracies = dict(zip(tested, jax.lax.map(test_accuracy, (weights, stats))))
        precise_acc = accuracies.get("precise", missing)
        weighted_acc = accuracies.get("example_weighted", missing)
    return batch_stats_acc, precise_acc, train_batch_stats_acc, weighted_acc


def diagnose_run(s: Setup, seed, values: RunValues, data: Data, state: RunState) -> Diagnostics:
    data = run_data(s, seed, data)
    train = state.train
    x, y = data.train_x[: s.plan.sgd_batch], data.train_y[: s.plan.sgd_batch]
    frozen = model_for(s, values, momentum=0.0)
    return layer_diagnostics(model_for(s, values), train.params, train.batch_stats, x, y, frozen,
                             precise_inputs(s, seed, data), values["ghost_size"])  # fmt: skip


def make_training(config: Config, cell: Cell, num_classes: int, n_train: int,
                  on_epoch: Callable[[jax.Array], None] | None = None,
                  on_metrics: Callable | None = None) -> Training:  # fmt: skip
    """The phases of one run of `cell`. `on_epoch(index)` is called from inside the compiled program as epoch
    `index` (0-based) starts: once per epoch for the whole grid, since no vmap batches the index (a chunked grid
    calls it once per chunk, a data-parallel protocol once per device). `on_metrics(index, seeds, metrics)` is
    called as the epoch ends, with its `EpochMetrics` of the whole grid (`grid_callback`). A program with either
    calls back to the host, so neither program cache keeps it."""
    s = setup(config, cell, num_classes, n_train)
    tell = grid_callback(on_metrics) if on_metrics is not None else None
    epochs = functools.partial(run_epochs, s, on_epoch=on_epoch, tell=tell)
    return Training(functools.partial(start_run, s), epochs, functools.partial(finish_run, s),
                    functools.partial(diagnose_run, s), s.config.train.epochs)  # fmt: skip
