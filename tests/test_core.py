"""The named core (`normbench.core.sweep.train_grid`, `jit(vmap(vmap(train)))`) is what `normbench run` computes:
the runtime's path, phases compiled apart and stepped epoch by epoch from the host, gives its bits exactly."""

import dataclasses

import jax
import numpy as np
from conftest import tiny_config, tiny_dataset

from normbench.core.grid import cells, plan
from normbench.core.sweep import device_data, run_sweep, train_grid
from normbench.reports.progress import Progress


def test_the_runtime_trains_the_named_cores_bits():
    config = tiny_config()
    # the landscape probe and a short first epoch, so each of the epoch's branches is in both programs
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, landscape_steps=(1.0,),
                                                                   first_epoch_steps=2))  # fmt: skip
    dataset = tiny_dataset()
    (cell,) = cells(config)
    (result,) = run_sweep(config, dataset, Progress(), workers=1)
    seeds, values = plan(config, cell).arrays()
    _, core = train_grid(config, cell, dataset.num_classes, len(dataset.train_x))(seeds, values, device_data(dataset))
    core = jax.device_get(core)
    assert np.isfinite(core.train_loss).all() and np.isfinite(core.landscape_loss_min).all()
    for name, value in core._asdict().items():
        np.testing.assert_array_equal(getattr(result.metrics, name), value, err_msg=name)
