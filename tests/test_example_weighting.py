"""Inference example weighting (Summers & Dinneen, 2020) against the paper's formula in float64 NumPy, and the two
evaluations after training that measure the train/test mismatch: `train_acc_batch_stats` and
`test_acc_example_weighted`, recomputed by hand from a tiny trained run's final states, and read as not measured
from tables written before them."""

import dataclasses
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

import normbench
from normbench.config import ConfigError, NormConfig
from normbench.core.axes import run_columns
from normbench.core.grid import Cell, plan
from normbench.core.sweep import device_data, train_cell
from normbench.models import build_model
from normbench.norms import NORMS, WHOLE_BATCH, BatchStats, check_norm
from normbench.norms.ghost_batch import example_weighted
from normbench.reports.compare import compare, read_sweeps
from normbench.reports.summary import final_table
from normbench.results.reader import ResultsWarning
from normbench.results.resume import Unfinished
from normbench.results.store import (
    LATER_COLUMNS,
    METRICS,
    in_current_columns,
    metric_columns,
    parse_metrics,
    read_config,
    read_metrics,
)

EPS = 1e-3
# The two eval modes that weight examples: BatchNorm's (batch, ghost_batch, batch+ws) and Batch Renorm's. The
# conformance checks hold every norm that declares the option to the same invariance.
WEIGHTED = ("batch", "batch_renorm")


def papers_formula(x, mean, var, alpha, scale, bias):
    """Summers & Dinneen's inference example weighting, as the paper writes it, in float64: the example's own
    moments over its positions (axes between the first and the last) mixed with the population's."""
    x = np.asarray(x, np.float64)
    positions = tuple(range(1, x.ndim - 1))
    own_mean = x.mean(positions, keepdims=True) if positions else x
    own_square = (x**2).mean(positions, keepdims=True) if positions else x**2
    mu = alpha * own_mean + (1 - alpha) * mean
    sigma2 = alpha * own_square + (1 - alpha) * (var + mean**2) - mu**2
    return scale * (x - mu) / np.sqrt(sigma2 + EPS) + bias


def evaluate(name, x, mean, var, alpha, scale, bias):
    """The norm's eval mode on x, with running statistics set to (mean, var) and the affine to (scale, bias)."""
    config = NormConfig(epsilon=EPS, inference_example_weight=alpha, renorm_train_steps=10)
    module = NORMS[name].make(config, WHOLE_BATCH)(False)
    variables = module.init(jax.random.PRNGKey(0), x)
    stats = dict(variables["batch_stats"], mean=jnp.asarray(mean, jnp.float32))
    if "sigma" in stats:  # batch_renorm keeps sigma = sqrt(var + eps)
        stats["sigma"] = jnp.sqrt(jnp.asarray(var, jnp.float32) + EPS)
    else:
        stats["var"] = jnp.asarray(var, jnp.float32)
    params = {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    return np.asarray(module.apply({"params": params, "batch_stats": stats}, x))


def test_the_norms_that_weight_examples_are_those_with_a_running_mean_and_variance():
    """EvoNorm-B0 keeps a running variance alone and PowerNorm a running quadratic mean: the paper's mu_i has no
    population mean to mix with, so they do not declare the option."""
    declared = {name for name, spec in NORMS.items() if spec.weights_examples}
    assert declared == {"batch", "ghost_batch", "batch_renorm", "batch+ws"}
    assert {"evonorm_b0", "power"} <= {name for name, spec in NORMS.items() if spec.running_stats} - declared


def test_one_value_by_hand():
    """An (N, C) example has no positions, so its own variance is 0: x = 3 against mu = 1, var = 4 at alpha = 1/2
    gives mu_i = 2 and sigma_i^2 = (9 + (4 + 1)) / 2 - 4 = 3, so y = (3 - 2) / sqrt(3 + eps)."""
    x = jnp.asarray([[3.0]])
    for name in WEIGHTED:
        y = evaluate(name, x, [1.0], [4.0], 0.5, [1.0], [0.0])
        np.testing.assert_allclose(y, [[1 / np.sqrt(3 + EPS)]], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 3)], ids=["mlp", "conv"])
@pytest.mark.parametrize("name", WEIGHTED)
def test_eval_mode_is_the_papers_formula(name, shape):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(0.5, 2.0, shape), jnp.float32)
    mean, var = np.array([0.3, -1.0, 2.0]), np.array([0.5, 4.0, 1.5])
    scale, bias = np.array([1.5, 0.7, -2.0]), np.array([0.1, -0.2, 0.3])
    for alpha in (0.3, 1 / shape[0], 1.0):
        expected = papers_formula(x, mean, var, alpha, scale, bias)
        got = evaluate(name, x, mean, var, alpha, scale, bias)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5, err_msg=f"{name}, alpha={alpha}")


@pytest.mark.parametrize("shape", [(5, 32), (4, 3, 2, 32)], ids=["mlp", "conv"])
def test_a_weight_of_zero_normalizes_with_the_running_statistics_to_the_bit(shape):
    """Traced (so not skipped as a config's 0 is), the weighting at 0 is mu and sigma exactly; the norms' eval mode
    then is the plain one up to the rounding of XLA's rewrites, and at a config's 0 it is the plain program."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(1.0, 3.0, shape), jnp.float32)
    mean, var = rng.normal(0.0, 1.0, 32).astype(np.float32), rng.uniform(0.01, 9.0, 32).astype(np.float32)
    sigma = jnp.sqrt(var + EPS)
    mixed_mean, mixed_sigma = jax.jit(example_weighted)(x, mean, sigma, EPS, jnp.float32(0.0))
    np.testing.assert_array_equal(mixed_mean, np.broadcast_to(mean, mixed_mean.shape))
    np.testing.assert_array_equal(mixed_sigma, np.broadcast_to(sigma, mixed_sigma.shape))
    affine = (np.ones(32), np.zeros(32))
    for name in WEIGHTED:
        plain = evaluate(name, x, mean, var, 0.0, *affine)
        np.testing.assert_allclose(plain, papers_formula(x, mean, var, 0.0, *affine), rtol=1e-5, atol=1e-5)
        traced = evaluate(name, x, mean, var, jnp.float32(0.0), *affine)
        np.testing.assert_allclose(traced, plain, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape", [(8, 3), (8, 2, 2, 3)], ids=["mlp", "conv"])
@pytest.mark.parametrize("name", WEIGHTED)
def test_weight_one_over_g_with_the_rest_of_a_ghost_group_as_population_is_train_mode(name, shape):
    """What the weight 1/g stands for under the ghost protocol: an example saw its ghost group's statistics, its own
    share of them 1/g. With running statistics that are the other g - 1 examples' of its group, eval mode with the
    weight 1/g (traced, as the trainer passes it) normalizes it as train mode did."""
    g = 4
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(1.0, 2.0, shape), jnp.float32)
    config = NormConfig(epsilon=EPS, renorm_train_steps=10)
    train = NORMS[name].make(config, BatchStats(group_size=g))(True)
    variables = train.init(jax.random.PRNGKey(0), x)
    y_train, _ = train.apply(variables, x, mutable=["batch_stats"])
    alone = NORMS[name].make(dataclasses.replace(config, momentum=0.0), WHOLE_BATCH)(True)

    @jax.jit
    def eval_mode(weight, variables, x):
        return (
            NORMS[name]
            .make(dataclasses.replace(config, inference_example_weight=weight), WHOLE_BATCH)(False)
            .apply(variables, x)
        )

    for i in (1, 6):  # one example of each group
        group = range(i // g * g, i // g * g + g)
        rest = jnp.stack([x[j] for j in group if j != i])
        _, others = alone.apply(variables, rest, mutable=["batch_stats"])
        y_eval = eval_mode(jnp.float32(1 / g), {**variables, **others}, x)
        np.testing.assert_allclose(y_eval[i], y_train[i], rtol=1e-4, atol=1e-5)


def test_a_weight_outside_0_1_is_refused():
    for name in WEIGHTED:
        with pytest.raises(ConfigError, match=r"inference_example_weight must be in \[0, 1\], got 1.5"):
            check_norm(name, NormConfig(inference_example_weight=1.5, renorm_train_steps=10), (8,))
        check_norm(name, NormConfig(inference_example_weight=1.0, renorm_train_steps=10), (8,))


def correct(model, variables, x, y, train: bool, batch: int) -> int:
    """Correctly classified examples, in batches of consecutive examples (vmapped); in train mode each batch is
    normalized by its own statistics (ghost groups as the model forms them) and the updates are dropped."""

    def logits(chunk):
        if train:
            return model.apply(variables, chunk, train=True, mutable=["batch_stats"])[0]
        return model.apply(variables, chunk, train=False)

    chunks = jnp.asarray(x).reshape((-1, batch) + x.shape[1:])
    return int(jnp.sum(jnp.argmax(jax.vmap(logits)(chunks), -1) == jnp.asarray(y).reshape(-1, batch)))


@pytest.mark.slow
def test_the_evaluations_after_training_recomputed_by_hand():
    """A ghost cell (SGD batch 8, ghost groups of 2 and 8): for each run, `train_acc_batch_stats` is the training
    set in train mode, in consecutive batches of 8 with ghost groups of the run's g, and `test_acc_example_weighted`
    the test set in eval mode with the weight 1/g. Recomputed from the final states one run at a time."""
    config = tiny_config(batch_sizes=(2, 8), seeds=(0,), protocols=("ghost",))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "ghost", 8)
    states, result = train_cell(config, cell, dataset, device_data(dataset))
    ghost_sizes = plan(config, cell).run_values["ghost_size"]
    assert sorted(set(ghost_sizes)) == [2, 8]
    m = result.metrics
    for k, g in enumerate(ghost_sizes):
        variables = jax.tree.map(lambda a, k=k: a[0, k], {"params": states.params, "batch_stats": states.batch_stats})
        grouped = build_model("mlp", config.model, NORMS["batch"].make(config.norm, BatchStats(group_size=g)), 3)
        train_mode = correct(grouped, variables, dataset.train_x, dataset.train_y, True, 8)
        assert m.train_acc_batch_stats[0, k] == pytest.approx(train_mode / 48, abs=1e-6)
        weighting = dataclasses.replace(config.norm, inference_example_weight=1 / g)
        weighted = build_model("mlp", config.model, NORMS["batch"].make(weighting, BatchStats(group_size=g)), 3)
        example_weighted = correct(weighted, variables, dataset.test_x, dataset.test_y, False, 8)
        assert m.test_acc_example_weighted[0, k] == pytest.approx(example_weighted / 24, abs=1e-6)
        # Else this test could not tell the train-mode pass from the eval-mode one it sits beside.
        running = correct(grouped, variables, dataset.train_x, dataset.train_y, False, 8)
        assert m.train_acc[0, k, -1] == pytest.approx(running / 48, abs=1e-6)
    assert (m.train_acc_batch_stats[0] != m.train_acc[0, :, -1]).any()
    assert (m.test_acc_example_weighted[0] != m.test_acc[0, :, -1]).any()


AFTER = {"batch_stats": ("test_acc_batch_stats", "train_acc_batch_stats"), "precise": ("test_acc_precise",),
         "example_weighted": ("test_acc_example_weighted",)}  # fmt: skip


# The fast tier takes one of each branch of `finish_run`: none, the train-mode pass alone, the eval pass alone.
SLOW = pytest.mark.slow
AFTER_CELL, AFTER_CONFIG = Cell("mlp", "batch", "sgd", 8), tiny_config(seeds=(0,))


@pytest.fixture(scope="module")
def with_every_evaluation():
    """The cell trained with all of `train.after_training` (the default), once for the cases that leave some out."""
    dataset = tiny_dataset()
    return train_cell(AFTER_CONFIG, AFTER_CELL, dataset, device_data(dataset))[1]


@pytest.mark.parametrize("wanted", [(), ("precise", "batch_stats"), ("example_weighted",),
                                    pytest.param(("batch_stats",), marks=SLOW), pytest.param(("precise",), marks=SLOW),
                                    pytest.param(("example_weighted", "precise"), marks=SLOW)])  # fmt: skip
def test_the_evaluations_after_training_left_out_are_nan_and_the_rest_the_same_bits(with_every_evaluation, wanted):
    """`train.after_training` names the evaluations a cell's `finish` program computes: each named one has the
    bits it has when all are (its forward passes are the same, in fewer rows), each other one is NaN."""
    fewer = dataclasses.replace(AFTER_CONFIG, train=dataclasses.replace(AFTER_CONFIG.train, after_training=wanted))
    dataset, every = tiny_dataset(), with_every_evaluation
    _, some = train_cell(fewer, AFTER_CELL, dataset, device_data(dataset))
    for name, columns in AFTER.items():
        for column in columns:
            if name in wanted:
                np.testing.assert_array_equal(getattr(some.metrics, column), getattr(every.metrics, column), column)
            else:
                assert np.isnan(getattr(some.metrics, column)).all(), column
    assert not np.isnan(every.metrics.test_acc_example_weighted).any()
    np.testing.assert_array_equal(some.metrics.test_acc, every.metrics.test_acc)


COMMITTED = Path(__file__).resolve().parent.parent / "results" / "init_scale"


def without_later_columns(out):
    """`out`'s metrics.csv as a table written before the two columns existed (the columns dropped, as they were
    never written), its manifest removed as such a run wrote none; returns the table's text."""
    rows = [line.split(",") for line in (out / METRICS).read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in LATER_COLUMNS]
    text = "".join(",".join(row[i] for i in keep) + "\n" for row in rows)
    (out / METRICS).write_text(text)
    (out / "manifest.json").unlink(missing_ok=True)
    return text


def test_a_table_written_before_the_two_columns_reads_them_as_not_measured(tmp_path):
    """Results written before train_acc_batch_stats and test_acc_example_weighted existed: every reader takes them
    as NaN (summary.md as `-`), and an interrupted run's cell kept without them joins a new cell's table."""
    out = tmp_path / "init_scale"
    shutil.copytree(COMMITTED, out)
    old_text = without_later_columns(out)
    assert not set(LATER_COLUMNS) & set(old_text.splitlines()[0].split(","))
    columns = read_metrics(out)
    for column in LATER_COLUMNS:
        assert np.isnan(columns[column]).all() and np.isnan(normbench.load(out)[column]).all()
    last = columns["epoch"] == columns["epoch"].max()
    final = {**{k: v[last] for k, v in columns.items()}, "norm_batch": columns["ghost_size"][last]}
    header, _, first = final_table(final)[:3]
    cells = dict(zip(header.strip("| ").split(" | "), first.strip("| ").split(" | ")))
    assert cells["train acc, batch stats"] == cells["test acc, example-weighted"] == "-" != cells["train acc"]
    with pytest.warns(ResultsWarning, match="the same directory"):
        assert compare(read_sweeps([out, out]), "test_acc_example_weighted").table["mean"].isna().all()
    # A kept cell's rows in the columns of a cell trained today: the old values in place, "nan" in the new ones.
    upgraded = in_current_columns(old_text)
    config = read_config(out)
    assert upgraded.splitlines()[0].split(",") == [*run_columns(config), *metric_columns(config)]
    again = parse_metrics(upgraded)
    for column, values in parse_metrics(old_text).items():
        np.testing.assert_array_equal(again[column], values, err_msg=column)
    assert in_current_columns(upgraded) == upgraded
    unfinished = Unfinished(tmp_path / "resumed")
    unfinished.begin(config, force=False)
    (unfinished.root / "cells" / "0000.csv").write_text(old_text)
    assert unfinished.finished() == {0: upgraded}
