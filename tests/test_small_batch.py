"""The pieces of the small-batch study: ghost BN, PreciseBN, learning-rate scaling, the cells."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.config import ModelConfig, NormConfig, load_config, set_fields
from normbench.core import train
from normbench.core.grid import Cell, cells, plan
from normbench.core.sweep import device_data
from normbench.core.train import batch_stats_accuracy, eval_logits, forward_piece, precise_batch_stats
from normbench.models import MODELS, build_model
from normbench.norms import NORMS, WHOLE_BATCH, BatchStats
from normbench.norms.ghost_batch import GhostBatchNorm

CFG = NormConfig(momentum=0.9, epsilon=1e-6)
SMALL_BATCH = Path(__file__).resolve().parent.parent / "configs" / "small_batch.py"


def rand(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(2.0, 3.0, shape), jnp.float32)


def run(module, x, **kwargs):
    variables = module.init(jax.random.PRNGKey(0), x)
    return module.apply(variables, x, mutable=["batch_stats"], **kwargs)


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 3, 4)])
def test_ghost_bn_with_one_group_is_batch_norm(shape):
    x = rand(*shape)
    y_bn, stats_bn = run(NORMS["batch"].make(CFG, WHOLE_BATCH)(True), x)
    y_ghost, stats_ghost = run(NORMS["batch"].make(CFG, BatchStats(group_size=jnp.int32(shape[0])))(True), x)
    np.testing.assert_allclose(y_ghost, y_bn, rtol=1e-5, atol=1e-5)
    for key in ("mean", "var"):
        np.testing.assert_allclose(stats_ghost["batch_stats"][key], stats_bn["batch_stats"][key], rtol=1e-5)


def test_ghost_bn_normalizes_each_group_by_its_own_statistics():
    x = rand(12, 3)
    y, stats = run(GhostBatchNorm(jnp.int32(4), use_running_average=False, momentum=0.9, epsilon=1e-6), x)
    groups = np.asarray(x, np.float64).reshape(3, 4, 3)
    mu, var = groups.mean(1, keepdims=True), groups.var(1, keepdims=True)
    np.testing.assert_allclose(y, ((groups - mu) / np.sqrt(var + 1e-6)).reshape(12, 3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["batch_stats"]["mean"], 0.1 * mu.mean((0, 1)), rtol=1e-5)
    np.testing.assert_allclose(stats["batch_stats"]["var"], 0.9 + 0.1 * var.mean((0, 1)), rtol=1e-5)


def test_precise_bn_is_the_mean_of_each_batchs_own_statistics():
    config = ModelConfig(hidden=(6, 5))
    model = build_model("mlp", config, NORMS["batch"].make(CFG, WHOLE_BATCH), 3)
    probe = build_model("mlp", config, NORMS["batch"].make(dataclasses.replace(CFG, momentum=0.0), WHOLE_BATCH), 3)
    xs = rand(4, 10, 7)  # 4 batches of 10
    variables = model.init(jax.random.PRNGKey(1), xs[0], train=False)
    precise = precise_batch_stats(probe, variables, xs)
    # Directly: the first BN layer sees Dense_0's outputs, whose per-batch moments we can write down.
    dense = variables["params"]["Dense_0"]
    h = np.einsum("nbi,io->nbo", np.asarray(xs, np.float64), dense["kernel"]) + dense["bias"]
    np.testing.assert_allclose(precise["BatchNorm_0"]["mean"], h.mean(1).mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(precise["BatchNorm_0"]["var"], h.var(1).mean(0), rtol=1e-4, atol=1e-6)
    # Deeper layers: the same average of what plain train-mode passes report, one batch at a time.
    per_batch = [model.apply({**variables, "batch_stats": jax.tree.map(jnp.zeros_like, variables["batch_stats"])},
                             x, train=True, mutable=["batch_stats"])[1]["batch_stats"] for x in xs]  # fmt: skip
    # momentum 0.9 from zeros leaves 0.1 x the batch statistic
    expected = jax.tree.map(lambda *s: np.mean(s, axis=0) / 0.1, *per_batch)
    for a, b in zip(jax.tree.leaves(precise), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_stats_accuracy_normalizes_each_test_batch_by_itself():
    model = build_model("mlp", ModelConfig(hidden=(6,)), NORMS["batch"].make(CFG, WHOLE_BATCH), 3)
    x, y = rand(10, 5), jnp.asarray(np.arange(10) % 3)
    variables = model.init(jax.random.PRNGKey(2), x, train=False)
    expected = []
    for batch in (x[:4], x[4:8]):  # the last 2 examples do not fill a batch of 4
        logits, _ = model.apply(variables, batch, train=True, mutable=["batch_stats"])
        expected.append(np.argmax(logits, -1))
    expected = np.mean(np.concatenate(expected) == np.asarray(y[:8]))
    assert float(batch_stats_accuracy(model, variables, x, y, 4)) == pytest.approx(expected)


@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_the_evaluations_after_training_compute_what_each_computes_alone(norm):
    """`finish_run` reads the test set's batches, the training set's and PreciseBN's in one train-mode pass, and
    PreciseBN's test evaluation and example weighting's in one eval-mode pass: each number is, to the bit, the one
    its own pass computes (`batch_stats_accuracy`, `precise_batch_stats`, `evaluate`), here with the CNN's pieces
    grouping the batches of the three sets together."""
    config = tiny_config(norms=(norm,), seeds=(0,), init_scales=(1.0,), models=("cnn",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precise_bn_examples=40))
    dataset = tiny_dataset(n_train=96, n_test=480)  # enough test images that each number moves with what it reads
    data = device_data(dataset)
    (cell,) = cells(config)
    s = train.setup(config, cell, dataset.num_classes, len(dataset.train_x))
    seeds, grid_values = plan(config, cell).arrays()
    seed, values = seeds[0], {key: value[0] for key, value in grid_values.items()}
    state = train.start_run(s, seed, values, data)
    state = train.run_epochs(s, seed, values, data, state, 0, count=1)[0]
    got = jax.jit(lambda state: train.finish_run(s, seed, values, data, state))(state)

    def alone(state):
        model, frozen = train.model_for(s, values), train.model_for(s, values, momentum=0.0)
        variables = {"params": state.train.params, "batch_stats": state.train.batch_stats}
        batch, piece, test = s.statistics_batch, s.eval_piece, (data.test_x, data.test_y, config.train.eval_batch_size)
        precise = precise_batch_stats(frozen, variables, train.precise_inputs(s, seed, data), "batch_mean", piece)
        weighted = train.model_for(s, values, inference_example_weight=1.0 / values["ghost_size"])
        return (batch_stats_accuracy(model, variables, data.test_x, data.test_y, batch, piece),
                train.evaluate(model, {**variables, "batch_stats": precise}, *test, piece)[1],
                batch_stats_accuracy(model, variables, data.train_x, data.train_y, batch, piece),
                train.evaluate(weighted, variables, *test, piece)[1])  # fmt: skip

    for name, a, b in zip(("batch stats", "PreciseBN", "train batch stats", "weighted"), got, jax.jit(alone)(state)):
        assert float(a) == float(b), name


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_evaluations_in_pieces_compute_what_one_pass_computes(model_name):
    """An evaluation's forward pass in pieces (`forward_piece`, the last one padded) computes each example's logits,
    each test batch's own-statistics count and each batch's PreciseBN statistics as the unpieced computation does,
    up to the last bits of a matrix product's leftover rows."""
    model = build_model(model_name, ModelConfig(hidden=(6,)), NORMS["batch"].make(CFG, WHOLE_BATCH), 3)
    frozen = dataclasses.replace(CFG, momentum=0.0)
    probe = build_model(model_name, ModelConfig(hidden=(6,)), NORMS["batch"].make(frozen, WHOLE_BATCH), 3)
    x, y = rand(30, 8, 8, 1), jnp.asarray(np.arange(30) % 3)
    variables = model.init(jax.random.PRNGKey(2), x, train=False)
    whole = jax.jit(lambda x: model.apply(variables, x, train=False))(x)
    pieces = jax.jit(lambda x: eval_logits(model, variables, x, 7))(x)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-5 * float(jnp.abs(whole).max()))
    accuracy = jax.jit(batch_stats_accuracy, static_argnums=(0, 4, 5))
    assert accuracy(model, variables, x, y, 3, 9) == accuracy(model, variables, x, y, 3, None)
    precise = jax.jit(precise_batch_stats, static_argnums=(0, 3, 4))
    xs = x.reshape(10, 3, 8, 8, 1)
    for a, b in zip(jax.tree.leaves(precise(probe, variables, xs, "population", 9)),
                    jax.tree.leaves(precise(probe, variables, xs, "population", None))):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# 4 in the fast tier; 8 and 25 take 3.5 and 6 s at the study's shapes.
@pytest.mark.parametrize("runs", [4, pytest.param(8, marks=pytest.mark.slow), pytest.param(25, marks=pytest.mark.slow)])
def test_the_small_batch_studys_evaluation_in_pieces_is_the_same_bits_as_in_one_pass(runs):
    """At the committed CNN studies' shapes (the CNN on 28 x 28 images, chunks of 1,000, vmapped over the runs a
    pass holds: 4 in small_batch, at most 8 in images_per_statistic, 25 in the scorecard's CNN test) the pieces
    `forward_piece` gives leave every bit of the logits as one pass computes them, so their committed metrics
    stand."""
    study = load_config(SMALL_BATCH)
    model = build_model("cnn", study.model, NORMS["batch"].make(study.norm, WHOLE_BATCH), 10)
    x = rand(study.train.eval_batch_size, 28, 28, 1)
    piece = forward_piece(NORMS["batch"], MODELS["cnn"], runs)
    init = jax.vmap(lambda key: model.init(key, x[:2], train=False))
    variables = init(jax.random.split(jax.random.PRNGKey(3), runs))
    whole = jax.jit(jax.vmap(lambda v: model.apply(v, x, train=False)))(variables)
    pieces = jax.jit(jax.vmap(lambda v: eval_logits(model, v, x, piece)))(variables)
    np.testing.assert_array_equal(pieces, whole)


def test_the_cnn_is_evaluated_in_pieces_on_a_cpu_unless_its_norm_may_use_its_batch_in_eval_mode():
    cnn = MODELS["cnn"]
    assert forward_piece(NORMS["batch"], cnn, 8) == forward_piece(NORMS["layer"], cnn, 1) == 100
    # Smaller pieces where more runs share a pass, as in a grid of 20 or 40 runs vmapped whole (train.chunk_size=None).
    assert [forward_piece(NORMS["batch"], cnn, runs) for runs in (20, 25, 40, 5000)] == [40, 32, 20, 1]
    assert forward_piece(NORMS["batch"], MODELS["mlp"], 8) is None  # faster in one pass
    batch_only = dataclasses.replace(NORMS["batch"], running_stats=False)
    assert forward_piece(batch_only, cnn, 8) is None


def test_a_pass_counts_the_runs_a_chunk_vmaps_together():
    config = tiny_config(seeds=(0, 1, 2))  # 2 init scales a seed, batch 8
    assert plan(config, cells(config)[0]).runs_at_once == 6
    assert plan(set_fields(config, {"train.chunk_size": 2}), cells(config)[0]).runs_at_once == 4
    # Below train.chunk_min_batch every seed goes in one vmap; from it on, in chunks.
    assert (
        plan(set_fields(config, {"train.chunk_size": 2, "train.chunk_min_batch": 8}), cells(config)[0]).chunk_size == 2
    )
    below = plan(set_fields(config, {"train.chunk_size": 2, "train.chunk_min_batch": 9}), cells(config)[0])
    assert below.chunk_size is None and below.runs_at_once == 6


@pytest.mark.parametrize(("chunk_min_batch", "compiled"), [(8, 1), (16, None)])
def test_the_compiled_grid_is_chunked_only_from_chunk_min_batch_on(monkeypatch, chunk_min_batch, compiled):
    """What `compile_cell` hands the grid, for a cell at batch 8: the seeds a chunk holds, or None (one vmap)."""
    from normbench.core import sweep

    seen, real = [], sweep.vmap_grid
    monkeypatch.setattr(sweep, "vmap_grid", lambda fn, chunk_size=None, per_run=(): seen.append(chunk_size)
                        or real(fn, chunk_size, per_run))  # fmt: skip
    config = set_fields(
        tiny_config(seeds=(0, 1), init_scales=(1.0,)), {"train.chunk_size": 1, "train.chunk_min_batch": chunk_min_batch}
    )
    dataset = tiny_dataset()
    sweep.compile_cell(config, cells(config)[0], dataset, device_data(dataset))
    assert seen and set(seen) == {compiled}


def test_learning_rate_scales_linearly_with_the_sgd_batch():
    config = tiny_config(learning_rates=(0.1,), batch_sizes=(4, 16), init_scales=(1.0,))
    scaled = dataclasses.replace(config, train=dataclasses.replace(config.train, lr_reference_batch=16))
    assert plan(config, Cell("mlp", "batch", "sgd", 4)).run_values["learning_rate"] == (0.1,)
    assert plan(scaled, Cell("mlp", "batch", "sgd", 4)).run_values["learning_rate"] == (0.025,)
    assert plan(scaled, Cell("mlp", "batch", "sgd", 16)).run_values["learning_rate"] == (0.1,)
    # The ghost protocol keeps the SGD batch at 16 for every group size, so the rate stays at 0.1.
    ghost = plan(scaled, Cell("mlp", "batch", "ghost", 16)).run_values
    assert list(zip(ghost["learning_rate"], ghost["ghost_size"])) == [(0.1, 4), (0.1, 16)]


def test_a_ghost_cell_vmaps_every_size_for_a_batch_dependent_norm_and_one_for_the_others():
    config = tiny_config(norms=("batch", "layer"), batch_sizes=(4, 8), models=("mlp", "cnn"))
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, protocols=("sgd", "ghost")))
    got = cells(config)
    assert Cell("cnn", "batch", "ghost", 8) in got and Cell("mlp", "batch", "ghost", 8) in got
    assert [plan(config, c).stat_sizes for c in got if c.model == "mlp" and c.protocol == "ghost"] == [(4, 8), (8,)]
    assert len(got) == 2 * (2 * 2 + 2)


@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_precise_bn_population_variance_is_the_variance_of_all_the_examples_seen(norm):
    """Per channel and layer: each BN layer's input over the 4 batches concatenated, each example's input computed
    as a train-mode pass of its own batch computes it (deeper layers see their batch's statistics upstream)."""
    config = ModelConfig(hidden=(6, 5))
    norm_config = dataclasses.replace(CFG, renorm_train_steps=10)
    model = build_model("mlp", config, NORMS[norm].make(norm_config, WHOLE_BATCH), 3)
    probe = build_model("mlp", config, NORMS[norm].make(dataclasses.replace(norm_config, momentum=0.0), WHOLE_BATCH), 3)
    xs = rand(4, 10, 7) * jnp.arange(1.0, 5.0)[:, None, None] + jnp.arange(4.0)[:, None, None]  # batches differ
    variables = model.init(jax.random.PRNGKey(1), xs[0], train=False)
    naive = precise_batch_stats(probe, variables, xs)
    precise = precise_batch_stats(probe, variables, xs, "population")
    inputs = [
        model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True)[1]
        for x in xs
    ]
    for layer in range(2):
        h = np.concatenate(
            [np.asarray(i["intermediates"][f"Dense_{layer}"]["__call__"][0], np.float64) for i in inputs]
        )
        stats = precise[f"{type(NORMS[norm].make(CFG, WHOLE_BATCH)(True)).__name__}_{layer}"]
        np.testing.assert_allclose(stats["mean"], h.mean(0), rtol=1e-4, atol=1e-6)
        if norm == "batch":
            np.testing.assert_allclose(stats["var"], h.var(0), rtol=1e-4, atol=1e-6)
            if layer == 0:  # deeper layers see batches BN has already centred, so both estimates nearly agree
                assert not np.allclose(naive["BatchNorm_0"]["var"], h.var(0), rtol=1e-2)
        else:
            np.testing.assert_allclose(stats["sigma"], np.sqrt(h.var(0) + CFG.epsilon), rtol=1e-4, atol=1e-6)
