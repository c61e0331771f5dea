"""Benchmarks compare like with like: their alternative implementations compute the same runs."""

import dataclasses
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from benchmarks.batch_axis import bench_config, padded_grid
from benchmarks.matmul_floor import Shapes, program
from benchmarks.step_products import products_program
from normbench.config import ModelConfig
from normbench.core.budget import abstract_data, epoch_jaxpr, grid_args
from normbench.core.grid import Cell, cells, plan
from normbench.core.sweep import device_data, make_training, train_cell, vmap_grid
from normbench.core.train import STEP_SCOPE
from normbench.flops import dot_equations, jaxpr_flops, matmul_flops


@pytest.mark.slow
def test_padded_vmapped_batch_axis_equals_one_program_per_batch_size():
    config = bench_config(epochs=2, seeds=2, batch_sizes=(4, 8, 16))
    config = dataclasses.replace(config, model=ModelConfig(hidden=(8, 8)))
    dataset = tiny_dataset()
    data = device_data(dataset)
    fn, seeds, sizes = padded_grid(config, "batch", dataset.num_classes, len(dataset.train_x))
    padded_loss, padded_acc = jax.jit(fn)(seeds, sizes, data)
    for b in config.sweep.batch_sizes:
        cell = Cell("mlp", "batch", "sgd", b)
        _, result = train_cell(config, cell, dataset, data)
        for s, seed in enumerate(config.sweep.seeds):
            run = np.flatnonzero((seeds == seed) & (sizes == b))[0]
            np.testing.assert_allclose(padded_loss[run], result.metrics.train_loss[s, 0], rtol=2e-4, atol=1e-5)
            np.testing.assert_allclose(padded_acc[run], result.metrics.test_acc[s, 0], rtol=1e-5)


def test_the_matmul_floor_program_does_the_products_of_a_cell_without_a_norm():
    config = tiny_config(norms=("none",), seeds=(0,))
    # The test-set evaluation, which the floor leaves out, only in the last epoch's `lax.cond`: `branch=min`.
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, test_every=config.train.epochs))
    dataset = tiny_dataset()
    cell = cells(config)[0]
    seeds, values = plan(config, cell).arrays()
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    args = (seeds, values, device_data(dataset))
    # Less the forward pass of `model.init`, once per seed before training.
    init = matmul_flops(vmap_grid(training.start), *args)
    expected = matmul_flops(vmap_grid(training.train), *args, branch=min) - init
    shapes = Shapes(config, int(np.prod(dataset.train_x.shape[1:])), dataset.num_classes, len(dataset.train_x))
    assert matmul_flops(program(shapes), *shapes.operands()) == expected > 0


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_step_products_are_the_products_the_budget_counts_in_a_step(model):
    """`benchmarks/step_products.py` times the step's products alone: those `dot_equations` finds are, FLOP for FLOP,
    what the run's estimate counts in the step's scope, and its program computes them."""
    config = tiny_config(models=(model,), seeds=(0,))
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, channels=(4, 8)))
    dataset = tiny_dataset()
    (cell, *_) = cells(config)
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    grid = grid_args(training, plan(config, cell).arrays()[1], abstract_data(dataset, config.train.precision), 2)
    jaxpr, _ = epoch_jaxpr(training, grid)
    eqns = dot_equations(jaxpr, STEP_SCOPE)
    steps = plan(config, cell).steps(len(dataset.train_x)).per_epoch
    operands = [tuple(jnp.ones(v.aval.shape, v.aval.dtype) for v in e.invars) for e in eqns]
    products = products_program(eqns)
    assert matmul_flops(products, operands) * steps == jaxpr_flops(jaxpr, max, STEP_SCOPE) > 0
    assert [o.shape for o in products(operands)] == [e.outvars[0].aval.shape for e in eqns]


@pytest.mark.slow
def test_the_gpu_check_runs_each_step_in_its_time_and_packs_what_it_measured(tmp_path):
    """`benchmarks/gpu_check.sh`, shrunk (GPU_CHECK_SMOKE=1) and on this machine's backend, as the device tool
    runs it: each step ends within its limit, and every table and results folder comes back in one archive."""
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_SMOKE": "1", "PYTHON": sys.executable,
           "NORMBENCH_PEERS": str(tmp_path / "no peers")}  # fmt: skip
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=600)
    log = (tmp_path / "log.txt").read_text()
    for step in ("tests", "bench cnn", "bench peers", "conv ways", "small_batch study"):
        assert re.search(rf"^== {step}: exit 0 after \d+ s$", log, re.MULTILINE), log
    with tarfile.open(tmp_path / "gpu.tar.gz") as archive:
        names = set(archive.getnames())
    expected = {
        "check/bench_cnn/peak.csv",
        "check/conv_ways.md",
        "check/small_batch/metrics.csv",
        "check/small_batch/summary.md",
    }
    assert expected <= names
    assert not any(name.startswith("check/cache") for name in names)
