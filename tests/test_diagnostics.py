"""Layer diagnostics: the numbers are their formulas, they are computed at the chosen epochs from the same
states training reaches, and `--diagnostics` writes the table and its figures."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.cli import main
from normbench.config import ConfigError, ModelConfig
from normbench.core.axes import run_columns
from normbench.core.diagnostics import COLUMNS, LOG10_EDGES, layer_diagnostics, log_histogram
from normbench.core.grid import Cell
from normbench.core.sweep import device_data, train_cell
from normbench.models import build_model
from normbench.norms import NORMS, WHOLE_BATCH
from normbench.results.diagnostics import read_diagnostics
from normbench.results.store import read_config
from normbench.validate import validate


def test_log_histogram_bins_log10_magnitudes_and_leaves_zeros_and_nonfinite_out():
    values = jnp.array([0.0, 1e-3, -1e-3, 2.0, 1e9, 1e-30, jnp.nan, 0.0])
    hist = np.asarray(log_histogram(values))
    expected = np.zeros(len(LOG10_EDGES) - 1)
    for v in (1e-3, 1e-3, 2.0, 1e9, 1e-30):
        expected[np.clip(np.searchsorted(LOG10_EDGES, np.log10(v), side="right") - 1, 0, len(expected) - 1)] += 1
    np.testing.assert_allclose(hist, expected / 8)
    assert hist[-1] == 1 / 8 and hist[0] == 1 / 8  # beyond the edges: the end bins


@pytest.mark.parametrize("norm", [pytest.param("batch", marks=pytest.mark.slow), "none"])
def test_layer_diagnostics_match_a_hand_written_forward_pass(norm):
    model = build_model("mlp", ModelConfig(hidden=(6, 5)), NORMS[norm].make(tiny_config().norm, WHOLE_BATCH), 3)
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.random((8, 4), np.float32)), jnp.asarray(rng.integers(0, 3, 8))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    d = layer_diagnostics(model, params, stats, x, y, model, x[None], 8)

    def normalize(h, name):
        if norm == "none":
            return h
        mean, var = h.mean(0), h.var(0)
        p = params[name]
        return (h - mean) / jnp.sqrt(var + 1e-6) * p["scale"] + p["bias"]

    def forward(outputs_shift):
        h, pres, outs = x, [], []
        for i in range(2):
            pre = h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"]
            h = jax.nn.relu(normalize(pre, f"BatchNorm_{i}" if norm == "batch" else None)) + outputs_shift[i]
            pres.append(pre)
            outs.append(h)
        logits = h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (pres, outs)

    shifts = [jnp.zeros((8, 6)), jnp.zeros((8, 5))]
    grads, (pres, outs) = jax.grad(forward, has_aux=True)(shifts)
    np.testing.assert_allclose(d.pre_std, [p.std() for p in pres], rtol=1e-5)
    np.testing.assert_allclose(d.output_std, [o.std() for o in outs], rtol=1e-5)
    np.testing.assert_allclose(d.zero_frac, [np.mean(o == 0) for o in outs])
    np.testing.assert_allclose(d.grad_norm, [np.linalg.norm(g) for g in grads], rtol=1e-4)
    np.testing.assert_allclose(d.output_hist.sum(1) + d.zero_frac, 1.0, rtol=1e-6)


@pytest.mark.slow
def test_diagnostics_at_chosen_epochs_come_from_the_states_training_reaches():
    config = tiny_config(norms=("batch",), seeds=(0,))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3, diagnostics_at=(0, 3)))
    plain = dataclasses.replace(config, train=dataclasses.replace(config.train, diagnostics_at=()))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    data = device_data(dataset)
    states, with_diagnostics = train_cell(config, cell, dataset, data)
    _, without = train_cell(plain, cell, dataset, data)
    for name, value in without.metrics._asdict().items():
        np.testing.assert_allclose(getattr(with_diagnostics.metrics, name), value, rtol=2e-5, atol=1e-6)
    assert sorted(with_diagnostics.diagnostics) == [0, 3]
    assert with_diagnostics.diagnostics[3].pre_std.shape == (1, 2, 2)  # seeds, runs, layers
    model = build_model("mlp", config.model, NORMS["batch"].make(config.norm, WHOLE_BATCH), dataset.num_classes)
    final = jax.tree.map(lambda a: a[0, 1], (states.params, states.batch_stats))
    x = dataset.train_x[:8]
    expected = layer_diagnostics(model, *final, x, dataset.train_y[:8], model, x[None], 8)
    np.testing.assert_allclose(with_diagnostics.diagnostics[3].grad_norm[0, 1], expected.grad_norm, rtol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "power"])
def test_batch_fluctuation_is_the_distance_of_each_batch_statistic_from_the_running_one(norm):
    """Shen et al.'s (1/d) ||mu_B - mu|| and (1/d) ||sigma_B^2 - sigma^2|| (PowerNorm: its psi_B^2 against psi^2),
    averaged over three hand-built batches, against a NumPy forward pass with the statistics written out."""
    config = dataclasses.replace(tiny_config().norm, epsilon=1e-5)
    spec = NORMS[norm]
    model = build_model("mlp", ModelConfig(hidden=(6, 5)), spec.make(config, WHOLE_BATCH), 3)
    probe = build_model("mlp", ModelConfig(hidden=(6, 5)), spec.make(dataclasses.replace(config, momentum=0.0),
                                                                      WHOLE_BATCH), 3)  # fmt: skip
    rng = np.random.default_rng(0)
    batches = rng.normal(size=(3, 8, 4)).astype(np.float32) * np.float32([1, 3, 0.5, 2]) + 1
    variables = model.init(jax.random.PRNGKey(1), jnp.asarray(batches[0]), train=False)
    # Running statistics away from their start, so that every distance is the batch's and the running one's.
    stats = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.2, 2.0, s.shape).astype(np.float32)),
                         variables["batch_stats"])  # fmt: skip
    params = variables["params"]
    means, seconds = np.zeros((3, 2)), np.zeros((3, 2))
    for b, x in enumerate(batches):
        h = x
        for i in range(2):
            pre = h @ np.asarray(params[f"Dense_{i}"]["kernel"]) + np.asarray(params[f"Dense_{i}"]["bias"])
            run = {k: np.asarray(v) for k, v in stats[f"{type(model.norm(True)).__name__}_{i}"].items()}
            if norm == "batch":
                mean, var = pre.mean(0), pre.var(0)
                means[b, i] = np.linalg.norm(mean - run["mean"]) / pre.shape[1]
                seconds[b, i] = np.linalg.norm(var - run["var"]) / pre.shape[1]
                normed = (pre - mean) / np.sqrt(var + 1e-5)
            else:  # PowerNorm divides by its running quadratic mean; the batch's only moves it
                seconds[b, i] = np.linalg.norm((pre**2).mean(0) - run["psi2"]) / pre.shape[1]
                normed = pre / np.sqrt(run["psi2"] + 1e-5)
            p = params[f"{type(model.norm(True)).__name__}_{i}"]
            h = np.maximum(normed * np.asarray(p["scale"]) + np.asarray(p["bias"]), 0)
    x, y = jnp.asarray(batches[0]), jnp.zeros(8, jnp.int32)
    d = layer_diagnostics(model, params, stats, x, y, probe, jnp.asarray(batches), 8)
    np.testing.assert_allclose(d.var_fluctuation, seconds.mean(0), rtol=1e-4)
    if norm == "batch":
        np.testing.assert_allclose(d.mean_fluctuation, means.mean(0), rtol=1e-4)
    else:  # PowerNorm keeps no mean
        assert np.isnan(d.mean_fluctuation).all()


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_a_norm_without_batch_statistics_has_no_fluctuation(norm):
    model = build_model("mlp", ModelConfig(hidden=(6, 5)), NORMS[norm].make(tiny_config().norm, WHOLE_BATCH), 3)
    x = jnp.asarray(np.random.default_rng(0).random((8, 4), np.float32))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    d = layer_diagnostics(model, variables["params"], {}, x, jnp.zeros(8, jnp.int32), model, x[None], 8)
    assert d.mean_fluctuation.shape == d.var_fluctuation.shape == (2,)
    assert np.isnan(d.mean_fluctuation).all() and np.isnan(d.var_fluctuation).all()
    assert np.isfinite(d.grad_norm).all()


def test_models_without_layer_records_are_refused():
    config = tiny_config(models=("resnet20",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, diagnostics_at=(0,)))
    with pytest.raises(ConfigError, match="model 'resnet20' records no layer diagnostics; models that do: mlp, cnn"):
        validate(config)


@pytest.mark.slow
def test_the_cli_writes_the_table_and_its_figures(study, tmp_path):
    config, _ = study
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--diagnostics"]) == 0
    columns = read_diagnostics(out / "diagnostics.csv")
    assert tuple(columns) == run_columns(read_config(out)) + COLUMNS
    # 2 norms x 2 scales x 2 seeds x epochs (0, 1, 2) x 2 layers
    assert len(columns["layer"]) == 2 * 2 * 2 * 3 * 2
    assert set(columns["epoch"]) == {0, 1, 2} and columns["output_hist"].shape[1] == len(LOG10_EDGES) - 1
    for figure in ("activations.png", "layer_stats.png"):
        assert (out / figure).stat().st_size > 20_000


def test_summary_states_each_layers_fluctuation_over_training_and_at_the_end():
    from normbench.reports.summary import fluctuation_section

    rows = [(norm, seed, epoch) for norm in ("batch", "layer") for seed in (0, 1) for epoch in (0, 2, 4)]
    layers = {
        "norm": np.array([r[0] for r in rows]),
        "seed": np.array([r[1] for r in rows]),
        "epoch": np.array([r[2] for r in rows]),
        "layer": np.ones(len(rows), int),
        # batch: seed 0 at 1, 2, 3 and seed 1 at 3, 4, 5 over epochs 0, 2, 4; LN has none
        "mean_fluctuation": np.array([r[1] * 2 + r[2] / 2 + 1 if r[0] == "batch" else np.nan for r in rows]),
    }
    layers["var_fluctuation"] = 10 * layers["mean_fluctuation"]
    table = fluctuation_section(layers, tiny_config())
    assert "| configuration | layer | μ, epochs 2-4 | σ², epochs 2-4 | μ, epoch 4 | σ², epoch 4 |" in table
    (row,) = [line for line in table if line.startswith("| BatchNorm")]
    # per seed over epochs 2 and 4: 2.5 and 4.5; at epoch 4: 3 and 5 (95% CI with one degree of freedom)
    assert row.startswith("| BatchNorm | 1 | 3.5 ± 13 | 35 ± 1.3e+02 | 4 ± 13 | 40 ± 1.3e+02 |")
