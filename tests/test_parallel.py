"""Devices change where runs train, never what they compute: a sweep on 8 simulated CPU devices writes the
metrics of 1; per-device BatchNorm is BatchNorm of each device's slice; SyncBN is BatchNorm of the whole batch;
data-parallel training is its one-device equivalent (ghost BN, or BN over the SGD batch).

A device count is fixed when jax starts, so the multi-device halves run in a subprocess with XLA_FLAGS set
before jax is imported; each asserts there, and a failure shows its traceback here.
"""

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import study_text, tiny_config, tiny_dataset

from normbench.cli import main
from normbench.config import ConfigError
from normbench.core.grid import Cell, cells, plan
from normbench.core.sweep import check_fits, device_data, train_cell
from normbench.runtime.parallel import grid_shape

ROOT = Path(__file__).resolve().parent.parent
TOL = dict(rtol=2e-4, atol=2e-5)


def on_devices(code: str, n: int = 8, timeout: int = 300) -> str:
    """Run `code` in a fresh Python that sees `n` CPU devices; returns its stdout."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
        "JAX_PLATFORMS": "cpu",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",  # as conftest does here: tiny programs, compile time dominates
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
    }
    preamble = f"import jax\nassert jax.device_count() == {n}, jax.devices()\n"
    done = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(code)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


# 3 seeds x 3 scales: 8 devices cannot split either axis evenly, so both are padded
SWEEP = study_text(
    sweep='SweepConfig(norms=("batch", "layer"), batch_sizes=(16,), init_scales=(1.0, 0.3, 0.1), seeds=(0, 1, 2))',
    figures="()",
)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_sweep_on_8_devices_writes_the_metrics_of_1(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(SWEEP)
    assert main(["run", str(config), "--out", str(tmp_path / "one")]) == 0
    eight = str(tmp_path / "eight")
    on_devices(f"from normbench.cli import main; assert main(['run', {str(config)!r}, '--out', {eight!r}]) == 0")
    one, eight = read_rows(tmp_path / "one" / "metrics.csv"), read_rows(Path(eight) / "metrics.csv")
    keys = ("model", "norm", "protocol", "batch_size", "ghost_size", "init_scale", "seed", "learning_rate", "epoch")
    assert [[r[k] for k in keys] for r in eight] == [[r[k] for k in keys] for r in one]
    for column in ("train_loss", "train_acc", "test_loss", "test_acc", "test_acc_batch_stats", "test_acc_precise"):
        got, expected = (np.array([float(r[column]) for r in rows]) for rows in (eight, one))
        np.testing.assert_allclose(got, expected, **TOL, equal_nan=True, err_msg=column)
    assert [r["diverged"] for r in eight] == [r["diverged"] for r in one]
    assert json.loads((tmp_path / "eight" / "config.json").read_text())["environment"]["device_count"] == 8


BN_SETUP = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import PartitionSpec as P
from normbench.config import NormConfig
from normbench.norms import NORMS, WHOLE_BATCH, BatchStats
from normbench.runtime.parallel import DATA, data_mesh

CFG = NormConfig(momentum=0.9, epsilon=1e-6)
mesh = data_mesh(8)
x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, (8 * 4, 3, 3, 5)), jnp.float32)  # 4 examples per device
close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
"""


@pytest.mark.slow
def test_per_device_bn_on_8_devices_is_bn_of_each_devices_slice():
    on_devices(
        BN_SETUP
        + """
bn = NORMS["batch"].make(CFG, WHOLE_BATCH)(True)
variables = bn.init(jax.random.PRNGKey(0), x[:4])

def per_device(x):
    y, updates = bn.apply(variables, x, mutable=["batch_stats"])
    return y, jax.tree.map(lambda s: s[None], updates["batch_stats"])  # each device's own running statistics

y, stats = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(DATA), out_specs=P(DATA)))(x)
for d in range(8):
    y_d, updates = bn.apply(variables, x[4 * d : 4 * d + 4], mutable=["batch_stats"])
    close(y[4 * d : 4 * d + 4], y_d)
    for key in ("mean", "var"):
        close(stats[key][d], updates["batch_stats"][key])
assert not np.allclose(stats["mean"][0], stats["mean"][1])  # the devices did not share their statistics
"""
    )


@pytest.mark.slow
def test_sync_bn_on_8_devices_is_bn_of_the_whole_batch():
    on_devices(
        BN_SETUP
        + """
bn, sync = NORMS["batch"].make(CFG, WHOLE_BATCH)(True), NORMS["batch"].make(CFG, BatchStats(axis_name=DATA))(True)
variables = bn.init(jax.random.PRNGKey(0), x)
w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)

def synced(params, x):
    y, updates = sync.apply({**variables, "params": params}, x, mutable=["batch_stats"])
    return y, updates["batch_stats"]

sharded = jax.jit(jax.shard_map(synced, mesh=mesh, in_specs=(P(), P(DATA)), out_specs=(P(DATA), P())))
whole = lambda params, x: bn.apply({**variables, "params": params}, x, mutable=["batch_stats"])
y, stats = sharded(variables["params"], x)
y_whole, updates = whole(variables["params"], x)
close(y, y_whole)
for key in ("mean", "var"):
    close(stats[key], updates["batch_stats"][key])
# Backward too: the gradients through the all-reduces are the whole batch's.
loss = lambda f: lambda params, x: jnp.sum(f(params, x)[0] * w)
for got, expected in zip(jax.tree.leaves(jax.grad(loss(sharded), (0, 1))(variables["params"], x)),
                         jax.tree.leaves(jax.grad(loss(whole), (0, 1))(variables["params"], x))):
    close(got, expected)
"""
    )


DP_CONFIG = dict(norms=("batch",), init_scales=(1.0, 0.3), seeds=(0, 1))


def dp_config(**sweep):
    config = tiny_config(**{**DP_CONFIG, **sweep})
    # Batch renorm's r and d read the running statistics inside an epoch, which per_device keeps per device (as
    # each GPU would) and a ghost batch as one mean: held at plain BN (r = 1, d = 0) the two protocols agree.
    norm = dataclasses.replace(config.norm, renorm_hold_fraction=1.0)
    return dataclasses.replace(config, norm=norm, train=dataclasses.replace(config.train, epochs=3, data_parallel=8))


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "batch_renorm", "evonorm_b0"])
def test_data_parallel_training_is_its_one_device_equivalent(tmp_path, norm):
    """per_device at 4 examples per device = ghost groups of 4 of the SGD batch of 32; sync = the batch of 32."""
    on_devices(f"""
import numpy as np
from conftest import tiny_dataset
from test_parallel import dp_config
from normbench.core.grid import Cell
from normbench.core.sweep import device_data, train_cell

config, dataset = dp_config(batch_sizes=(4,)), tiny_dataset(n_train=64, n_test=32)
for protocol in ("per_device", "sync"):
    cell = Cell("mlp", {norm!r}, protocol, 4)
    _, result = train_cell(config, cell, dataset, device_data(dataset))
    np.savez({str(tmp_path)!r} + f"/{{protocol}}.npz", **result.metrics._asdict())
""")
    dataset = tiny_dataset(n_train=64, n_test=32)
    ghost = dp_config(batch_sizes=(4, 32), protocols=("ghost",))
    for protocol, config, cell, runs in (
        ("per_device", ghost, Cell("mlp", norm, "ghost", 32), slice(0, None, 2)),  # the ghost size 4 runs
        ("sync", dp_config(batch_sizes=(32,)), Cell("mlp", norm, "sgd", 32), slice(None)),
    ):
        _, result = train_cell(config, cell, dataset, device_data(dataset))
        parallel = np.load(tmp_path / f"{protocol}.npz")
        for name, expected in result.metrics._asdict().items():
            np.testing.assert_allclose(parallel[name], expected[:, runs], **TOL, err_msg=f"{protocol} {name}")


def test_the_data_parallel_protocols_ask_for_their_devices_before_compiling():
    config = dp_config(protocols=("per_device",))
    with pytest.raises(ConfigError, match="needs 8 devices, but jax sees 1; .*device_count=8") as e:
        check_fits(config, tiny_dataset())
    assert "\n" not in str(e.value)
    # Cells trained in phases (checkpoints, diagnostics) are single-device programs.
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, checkpoint_every=1))
    with pytest.raises(ConfigError, match="train.checkpoint_every runs single-device programs"):
        check_fits(config, tiny_dataset())


def test_data_parallel_cells_batches_and_learning_rates():
    config = dp_config(norms=("batch", "group"), batch_sizes=(2, 4), protocols=("per_device", "sync"))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr_reference_batch=16))
    # GroupNorm has no batch statistics to synchronize: no sync cell, as it has no ghost cell.
    assert [(c.norm, c.protocol) for c in cells(config)] == [("batch", "per_device")] * 2 + [("batch", "sync")] * 2 + [
        ("group", "per_device")
    ] * 2
    # (init_scale, learning rate scaled by the SGD batch 8 x 4 = 32, examples per BN statistic)
    expected = {"per_device": 4, "sync": 32}
    for protocol, ghost_size in expected.items():
        values = plan(config, Cell("mlp", "batch", protocol, 4)).run_values
        assert (values["init_scale"][0], values["learning_rate"][0], values["ghost_size"][0]) == (1.0, 0.2, ghost_size)


@pytest.mark.parametrize(
    "seeds, runs, chunked, shape",
    [(3, 16, False, (1, 8)), (5, 1, False, (8, 1)), (3, 3, False, (2, 4)), (5, 1, True, (1, 8)), (8, 8, False, (1, 8))],
)
def test_the_grid_mesh_pads_least(seeds, runs, chunked, shape):
    assert grid_shape(seeds, runs, 8, chunked) == shape
