"""The training-protocol fields that reproductions and fair comparisons rest on: the textbook's evaluation points,
float64, learning-rate schedules, a validation split and per-seed data resampling."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.config import ConfigError, DataConfig, set_fields
from normbench.core.grid import Cell, plan
from normbench.core.sweep import device_data, run_sweep
from normbench.core.train import make_train, warmup_cosine
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


@pytest.mark.slow
def test_a_cosine_schedule_with_warmup_takes_no_step_at_step_zero():
    """The first step's rate is 0 (warmup starts from 0), so the first epoch of one step leaves the model as it
    was initialized: the same train accuracy as an untrained run."""
    config = set_fields(
        tiny_config(), {"train.schedule": "cosine", "train.steps_per_epoch": 3, "train.first_epoch_steps": 1}
    )
    dataset = tiny_dataset()
    _, metrics = train_once(config, dataset)
    _, still = train_once(config, dataset, learning_rate=0.0)
    assert metrics.train_acc[0] == still.train_acc[0]
    assert metrics.train_loss[1] != still.train_loss[1]


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
