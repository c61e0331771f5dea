"""normbench's XLA flags (normbench.runtime.xla_flags): added only where the user has not set them and the installed
jaxlib takes them; on such a jaxlib they keep BatchNorm's sums out of YNNPACK and change no result beyond float
rounding. XLA reads its flags once per process, so the runs that compare them are subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from normbench.runtime.xla_flags import YNN_FLAG, YNN_JAXLIB, jaxlib_version, with_defaults


def test_the_flag_is_added_for_the_affected_jaxlib_only_and_never_over_the_users():
    assert with_defaults("", (0, 10, 2)) == f"{YNN_FLAG}=-reduce"
    assert with_defaults("--xla_force_host_platform_device_count=8", (0, 9, 0)) == (
        f"--xla_force_host_platform_device_count=8 {YNN_FLAG}=-reduce"
    )
    assert with_defaults(f"{YNN_FLAG}=+reduce", (0, 10, 2)) == f"{YNN_FLAG}=+reduce"
    for other in [(0, 8, 3), (0, 11, 0), None]:
        assert with_defaults("--xla_force_host_platform_device_count=8", other) == (
            "--xla_force_host_platform_device_count=8"
        )


# One BN cell (16 runs of an MLP 784-100-100-10, batch 100, 1 epoch) trained in a fresh process: whether its
# compiled program hands any reduction to YNNPACK, and its metrics.
TRAIN_ONE_CELL = """
import dataclasses, json, re, sys
import jax, numpy as np
from normbench.config import Config, DataConfig, ModelConfig, SweepConfig, TrainConfig
from normbench.core.grid import Cell, plan
from normbench.data import load
from normbench.core.sweep import device_data, make_training, vmap_grid

config = Config(
    name="flags", data=DataConfig(source="mnist5k", n_train=500, n_test=100), model=ModelConfig(hidden=(100, 100)),
    train=TrainConfig(epochs=1, eval_batch_size=100),
    sweep=SweepConfig(norms=("batch",), batch_sizes=(100,), init_scales=tuple(np.logspace(0, -2, 16).tolist()),
                      seeds=(0,), learning_rates=(0.01,)),
)
cell = Cell("mlp", "batch", "sgd", 100)
dataset = load(config.data)
seeds, values = plan(config, cell).arrays()
train = jax.jit(vmap_grid(make_training(config, cell, dataset.num_classes, len(dataset.train_x)).train))
compiled = train.lower(seeds, values, device_data(dataset)).compile()
text = compiled.as_text()
ynn = re.findall(r"calls=%?([\\w.-]+), [^\\n]*__ynn_fusion", text)
bodies = [re.search(r"^%?" + re.escape(c) + r" [^{]*\\{(.*?)^\\}", text, re.M | re.S).group(1) for c in ynn]
_, metrics = jax.device_get(compiled(seeds, values, device_data(dataset)))
np.savez(sys.argv[1], **metrics._asdict())
print(json.dumps({"ynn_fusions": len(ynn), "ynn_reductions": sum(" reduce(" in b for b in bodies)}))
"""


def train_one_cell(tmp_path, xla_flags: str):
    out = tmp_path / f"{len(list(tmp_path.iterdir()))}.npz"
    env = {**os.environ, "XLA_FLAGS": xla_flags}
    done = subprocess.run([sys.executable, "-c", TRAIN_ONE_CELL, str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), dict(np.load(out))


@pytest.mark.skipif(
    not (jaxlib_version() and YNN_JAXLIB[0] <= jaxlib_version() < YNN_JAXLIB[1]), reason="jaxlib without the flag"
)
@pytest.mark.slow
def test_batchnorm_sums_leave_ynnpack_and_the_metrics_stay_the_same(tmp_path):
    default, with_flag = train_one_cell(tmp_path, "")
    ynn_reductions, without_flag = train_one_cell(tmp_path, f"{YNN_FLAG}=+reduce")
    assert ynn_reductions["ynn_reductions"] > 0  # the XLA default that the flag is there to avoid
    assert default["ynn_reductions"] == 0 and default["ynn_fusions"] > 0  # the dot products stay with YNNPACK
    assert with_flag.keys() == without_flag.keys()
    for name in with_flag:
        np.testing.assert_allclose(with_flag[name], without_flag[name], rtol=1e-4, atol=1e-5, err_msg=name)
