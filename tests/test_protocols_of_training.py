"""The training-protocol fields that reproductions and fair comparisons rest on: the textbook's evaluation points,
float64, learning-rate schedules, a validation split and per-seed data resampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.config import ConfigError, DataConfig, set_fields
from normbench.core.grid import Cell, plan
from normbench.core.sweep import device_data, run_sweep
from normbench.core.train import make_train, optimizer, warmup_cosine
from normbench.core.train import setup as cell_setup
from normbench.data import DataError, load
from normbench.validate import validate

CELL = Cell("mlp", "batch", "sgd", 8)


def train_once(config, dataset, learning_rate=0.1):
    train = jax.jit(make_train(config, CELL, dataset.num_classes, len(dataset.train_x)))
    values = {"init_scale": np.float32(1.0), "learning_rate": np.float32(learning_rate), "ghost_size": np.int32(8)}
    return train(np.uint32(0), values, device_data(dataset))


def test_a_short_first_epoch_evaluates_after_its_steps_then_continues():
    """first_epoch_steps=1: epoch 1 is the model after one step, as a one-step run's; every later epoch is full."""
    config = set_fields(tiny_config(), {"train.steps_per_epoch": 3, "train.first_epoch_steps": 1})
    one_step = set_fields(tiny_config(), {"train.steps_per_epoch": 1, "train.epochs": 1})
    dataset = tiny_dataset()
    _, metrics = train_once(config, dataset)
    _, reference = train_once(one_step, dataset)
    np.testing.assert_allclose(metrics.train_acc[0], reference.train_acc[0], rtol=1e-6)
    np.testing.assert_allclose(metrics.train_loss[0], reference.train_loss[0], rtol=1e-6)
    assert plan(config, CELL).steps(48).per_run == 1 + 3
    assert metrics.train_acc[1] != metrics.train_acc[0]


def test_the_textbooks_step_count():
    config = set_fields(tiny_config(), {"train.steps_per_epoch": 10, "train.first_epoch_steps": 1, "train.epochs": 20})
    assert plan(config, CELL).steps(1000).per_run == 191


@pytest.mark.slow
def test_float64_training_is_float64_and_leaves_the_process_in_float32():
    config = set_fields(tiny_config(), {"train.precision": "float64"})
    (result,) = run_sweep(config, tiny_dataset(), todo=[CELL])
    assert not jax.config.jax_enable_x64
    assert result.metrics.train_loss.dtype == np.float64
    (single,) = run_sweep(tiny_config(), tiny_dataset(), todo=[CELL])
    assert single.metrics.train_loss.dtype == np.float32
    # Two epochs of a small net: float32 rounding stays far below the difference any study reads.
    np.testing.assert_allclose(result.metrics.train_loss, single.metrics.train_loss, rtol=1e-4)


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    rate = warmup_cosine(0.4, 10, 110)
    np.testing.assert_allclose([rate(0), rate(5), rate(10), rate(60), rate(110)], [0, 0.2, 0.4, 0.2, 0], atol=1e-7)


def test_a_cosine_schedule_with_warmup_takes_no_step_at_step_zero():
    """The first step's rate is 0 (warmup starts from 0), so a first epoch of one step leaves the model as it was
    initialized: its held-out loss after epoch 1 is, bit for bit, that of a run at learning rate 0. Four steps
    with warmup_fraction=0.25 make one warmup step (with the default 0.05 there would be none, and the first step
    would move the model)."""
    config = set_fields(
        tiny_config(),
        {"train.schedule": "cosine", "train.warmup_fraction": 0.25, "train.steps_per_epoch": 3,
         "train.first_epoch_steps": 1},
    )  # fmt: skip
    assert round(0.25 * plan(config, CELL).steps(48).per_run) == 1
    dataset = tiny_dataset()
    _, metrics = train_once(config, dataset)
    _, still = train_once(config, dataset, learning_rate=0.0)
    np.testing.assert_array_equal(metrics.test_loss[0], still.test_loss[0])
    assert metrics.train_acc[0] == still.train_acc[0]
    assert metrics.train_loss[1] != still.train_loss[1]


def library_optimizer(config):
    """The optimizer that training builds for `config`'s cell, at learning rate 0.1."""
    s = cell_setup(config, CELL, 3, 48)
    return optimizer(s, {"init_scale": np.float32(1.0), "learning_rate": np.float32(0.1), "ghost_size": np.int32(8)})


def rates_of_the_run(config, steps):
    """The learning rate of each of `steps` SGD steps of the optimizer that training builds (peak 0.1, momentum 0):
    a gradient of ones moves a parameter by minus the step's rate."""
    opt = library_optimizer(config)
    params = jnp.zeros(1)
    state = opt.init(params)
    rates = []
    for _ in range(steps):
        updates, state = opt.update(jnp.ones(1), state, params)
        rates.append(-float(updates[0]))
    return np.array(rates)


def test_the_cosine_schedule_spans_the_whole_run_not_one_epoch():
    """3 epochs (a first of 2 steps, then 4 each) are 10 steps; warmup_fraction=0.3 makes 3 of them warmup. Step k
    (from 0) takes 0.1 x k/3 during warmup, then 0.1 x (1 + cos(pi (k - 3)/7)) / 2: the decay reaches 0 at the
    run's 10th step, not at an epoch's 4th."""
    config = set_fields(
        tiny_config(),
        {"train.epochs": 3, "train.steps_per_epoch": 4, "train.first_epoch_steps": 2, "train.schedule": "cosine",
         "train.warmup_fraction": 0.3},
    )  # fmt: skip
    total, warmup = 10, 3
    assert plan(config, CELL).steps(48).per_run == total
    k = np.arange(total, dtype=np.float64)
    expected = np.where(k < warmup, 0.1 * k / warmup, 0.05 * (1 + np.cos(np.pi * (k - warmup) / (total - warmup))))
    np.testing.assert_allclose(rates_of_the_run(config, total), expected, rtol=1e-6, atol=1e-8)


# A tiny least-squares model: loss(p) = |x @ p["w"] + p["b"] - y|^2 / 2, whose gradient is written out in NumPy.
X = np.random.default_rng(0).normal(size=(5, 3))
Y = np.random.default_rng(1).normal(size=(5, 2))
P0 = {"w": np.random.default_rng(2).normal(size=(3, 2)), "b": np.random.default_rng(3).normal(size=2)}


def loss(params):
    return 0.5 * jnp.sum((jnp.asarray(X, jnp.float32) @ params["w"] + params["b"] - jnp.asarray(Y, jnp.float32)) ** 2)


def numpy_gradient(p):
    residual = X @ p["w"] + p["b"] - Y
    return {"w": X.T @ residual, "b": residual.sum(0)}


def library_steps(fields, steps):
    """`steps` updates of the optimizer that training builds for `fields` (learning rate 0.1), on `loss`."""
    opt = library_optimizer(set_fields(tiny_config(), fields))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), P0)
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgds_weight_decay_joins_the_gradient_before_momentum_and_the_learning_rate(momentum):
    """train.weight_decay with SGD: the gradient gains weight_decay x params, and momentum and the rate act on the
    sum: v = mu v + (g + wd p); p -= lr v, in float64 over two steps. Decay added after SGD's update (unscaled by
    the rate) would shrink p by 5% a step instead of 0.5%."""
    lr, wd = 0.1, 0.05
    got = library_steps({"train.weight_decay": wd, "train.momentum": momentum}, steps=2)
    p = {k: v.copy() for k, v in P0.items()}
    v = {k: np.zeros_like(a) for k, a in P0.items()}
    for _ in range(2):
        g = numpy_gradient(p)
        for k in p:
            v[k] = momentum * v[k] + (g[k] + wd * p[k])
            p[k] = p[k] - lr * v[k]
    for k in p:
        np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_adams_weight_decay_is_adamws_decoupled_decay():
    """train.weight_decay with Adam is AdamW's (Loshchilov & Hutter): the moments see the gradient alone, and the
    step is lr x (m_hat / (sqrt(v_hat) + eps) + wd p), in float64 over two steps."""
    lr, wd, b1, b2, eps = 0.1, 0.05, 0.9, 0.999, 1e-8
    got = library_steps({"train.optimizer": "adam", "train.weight_decay": wd}, steps=2)
    p = {k: v.copy() for k, v in P0.items()}
    m = {k: np.zeros_like(a) for k, a in P0.items()}
    v = {k: np.zeros_like(a) for k, a in P0.items()}
    for t in (1, 2):
        g = numpy_gradient(p)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            p[k] = p[k] - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p[k])
    for k in p:
        np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_the_validation_set_follows_the_training_set_and_is_never_trained_on():
    full = load(DataConfig(n_train=300))
    held = load(DataConfig(n_train=200, n_val=100))
    np.testing.assert_array_equal(held.train_x, full.train_x[:200])
    np.testing.assert_array_equal(held.val_x, full.train_x[200:300])
    everything = load(DataConfig(n_val=100))
    assert len(everything.train_x) == 3900 and len(everything.val_x) == 100
    with pytest.raises(DataError, match=r"n_train=3950 \+ n_val=100, but the train split has 4000"):
        load(DataConfig(n_train=3950, n_val=100))


@pytest.mark.slow
def test_validation_metrics_are_recorded_only_with_a_validation_set():
    dataset = tiny_dataset()
    held = dataclasses.replace(dataset, train_x=dataset.train_x[:32], train_y=dataset.train_y[:32],
                               val_x=dataset.train_x[32:], val_y=dataset.train_y[32:])  # fmt: skip
    _, metrics = train_once(tiny_config(), held)
    assert np.isfinite(metrics.val_acc).all() and np.isfinite(metrics.val_loss).all()
    _, without = train_once(tiny_config(), dataset)
    assert np.isnan(without.val_acc).all()


@pytest.mark.slow
def test_resampling_gives_each_seed_its_own_training_set():
    """With data.resample, seeds differ in their data as well; the split stays a partition of the examples."""
    dataset = tiny_dataset()
    held = dataclasses.replace(dataset, train_x=dataset.train_x[:32], train_y=dataset.train_y[:32],
                               val_x=dataset.train_x[32:], val_y=dataset.train_y[32:])  # fmt: skip
    fixed = tiny_config(seeds=(0,))
    config = set_fields(fixed, {"data.resample": True, "data.n_val": 16})
    _, resampled = train_once(config, held)
    _, same = train_once(fixed, held)
    assert not np.allclose(resampled.train_loss, same.train_loss)
    _, again = train_once(config, held)
    np.testing.assert_array_equal(resampled.train_loss, again.train_loss)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"train.precision": "float16"}, "unknown train.precision"),
        ({"train.schedule": "step"}, "unknown train.schedule"),
        ({"train.warmup_fraction": 1.0}, r"warmup_fraction must be in \[0, 1\)"),
        ({"train.first_epoch_steps": 0}, "first_epoch_steps must be positive"),
        ({"data.n_val": -1}, "n_val must be at least 0"),
        ({"data.resample": True}, "nothing else to draw"),
    ],
)
def test_bad_protocol_fields_are_one_clear_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        validate(set_fields(tiny_config(), fields))
