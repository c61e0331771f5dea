"""Benchmarks compare like with like: their alternative implementations compute the same runs."""

import dataclasses

import jax
import numpy as np
from conftest import tiny_dataset

from benchmarks.batch_axis import bench_config, padded_grid
from normbench.config import Cell, ModelConfig
from normbench.sweep import device_data, grid_values, train_cell


def test_padded_vmapped_batch_axis_equals_one_program_per_batch_size():
    config = bench_config(epochs=2, seeds=2, batch_sizes=(4, 8, 16))
    config = dataclasses.replace(config, model=ModelConfig(hidden=(8, 8)))
    dataset = tiny_dataset()
    data = device_data(dataset)
    fn, seeds, sizes = padded_grid(config, "batch", dataset.num_classes, len(dataset.train_x))
    padded_loss, padded_acc = jax.jit(fn)(seeds, sizes, data)
    for b in config.sweep.batch_sizes:
        cell = Cell("mlp", "batch", "sgd", b)
        _, result = train_cell(config, cell, dataset, data, *grid_values(config, cell))
        for s, seed in enumerate(config.sweep.seeds):
            run = np.flatnonzero((seeds == seed) & (sizes == b))[0]
            np.testing.assert_allclose(padded_loss[run], result.metrics.train_loss[s, 0], rtol=2e-4, atol=1e-5)
            np.testing.assert_allclose(padded_acc[run], result.metrics.test_acc[s, 0], rtol=1e-5)
