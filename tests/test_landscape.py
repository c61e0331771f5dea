"""Loss-landscape probes: the numbers are their closed forms on a quadratic, the sweep's vmapped probes are a run's
alone, the columns appear in metrics.csv only when asked for, and claims say whether a paper's sign holds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.config import ConfigError
from normbench.core import landscape
from normbench.core.grid import Cell, plan
from normbench.core.sweep import device_data, train_cell
from normbench.core.train import make_train, precision_scope
from normbench.reports.landscape_figure import landscape_figure
from normbench.results.claims import evaluate, parse_claim
from normbench.results.store import METRIC_COLUMNS, metrics_csv, parse_metrics
from normbench.validate import validate


def test_a_quadratics_probe_is_its_closed_form_in_float64():
    """L(θ) = ½ θᵀAθ over a two-leaf pytree: g = Aθ, the loss at θ - ηg is ½ (θ - ηAθ)ᵀA(θ - ηAθ), the gradient
    there changes by ηA²θ, so β is ‖A²θ‖ / ‖Aθ‖ at every η."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 5))
    a = m @ m.T + np.eye(5)
    theta = rng.normal(size=5)
    etas = np.array([0.01, 0.05, 0.2])
    with precision_scope("float64"):

        def loss(params):
            flat = jnp.concatenate([params["w"], params["b"]])
            return 0.5 * flat @ jnp.asarray(a) @ flat

        found = landscape.probe(jax.value_and_grad(loss), {"w": theta[:3], "b": theta[3:]}, jnp.asarray(etas))
        assert found.beta.dtype == jnp.float64
    g = a @ theta
    losses = [0.5 * (theta - e * g) @ a @ (theta - e * g) for e in etas]
    changes = etas * np.linalg.norm(a @ g)
    np.testing.assert_allclose(found.loss_min, min(losses), rtol=1e-12)
    np.testing.assert_allclose(found.loss_range, max(losses) - min(losses), rtol=1e-12)
    np.testing.assert_allclose([found.grad_change_min, found.grad_change_max], [changes[0], changes[-1]], rtol=1e-12)
    np.testing.assert_allclose(found.beta, np.linalg.norm(a @ g) / np.linalg.norm(g), rtol=1e-12)


def probing(**sweep):
    config = tiny_config(**sweep)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, landscape_steps=(0.5, 2.0)))


@pytest.mark.slow  # two compiles of a cell
def test_the_sweeps_vmapped_probes_are_each_runs_alone():
    config = probing(learning_rates=(0.1, 0.3))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    _, values = plan(config, cell).arrays()
    _, result = train_cell(config, cell, dataset, device_data(dataset))
    train = jax.jit(make_train(config, cell, dataset.num_classes, len(dataset.train_x)))
    for s, seed in enumerate(config.sweep.seeds):
        for k, (scale, lr) in enumerate(zip(values["init_scale"], values["learning_rate"])):
            run = {"init_scale": np.float32(scale), "learning_rate": np.float32(lr), "ghost_size": np.int32(8)}
            _, alone = train(np.uint32(seed), run, device_data(dataset))
            for column in landscape.COLUMNS:
                got, expected = getattr(result.metrics, column)[s, k], getattr(alone, column)
                assert np.isfinite(expected).all(), column
                np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5, err_msg=column)
    table = parse_metrics(metrics_csv(config, [result]))
    assert all(np.isfinite(table[column]).all() for column in landscape.COLUMNS)
    assert landscape_figure(table, config).axes  # every panel draws from the table alone


def test_without_landscape_steps_metrics_csv_keeps_its_columns():
    config = tiny_config(norms=("none",), init_scales=(1.0,), seeds=(0,))
    _, result = train_cell(config, Cell("mlp", "none", "sgd", 8), tiny_dataset(), device_data(tiny_dataset()))
    assert np.isnan(result.metrics.landscape_beta).all()
    assert metrics_csv(config, [result]).split("\n")[0].endswith(",".join(METRIC_COLUMNS))


@pytest.mark.parametrize("steps, figures, message", [((0.0, 1.0), (), "each > 0"), ((), ("landscape",), "set train")])
def test_bad_landscape_settings_are_config_errors(steps, figures, message):
    config = tiny_config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, landscape_steps=steps),
                                 figures=figures)  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        validate(config)


@pytest.mark.parametrize(
    "bn, expected",
    [(0.1, "agrees with the reference"), (0.9, "the opposite of the reference"), (0.5, "is not shown here")],
)
def test_a_claim_with_the_references_sign_says_whether_the_runs_agree(bn, expected):
    seeds = np.arange(5)
    noise = np.array([0.01, -0.02, 0.015, -0.005, 0.0])
    columns = {
        "norm": np.repeat(["batch", "none"], 5),
        "seed": np.tile(seeds, 2),
        "epoch": np.ones(10, int),
        "diverged": np.zeros(10, int),
        "landscape_beta": np.concatenate([bn + noise, 0.5 + noise[::-1]]),
    }
    claim = parse_claim("landscape_beta: norm=batch - norm=none < 0")
    assert claim.expected == -1 and claim.terms[-1][1] == (("norm", "none"),)
    assert expected in evaluate(claim, columns).line()
