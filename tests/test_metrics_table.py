"""metrics.csv holds each run's own numbers in the right columns: one trained cell (a validation split, the test set
evaluated every epoch, an evaluation batch that divides none of the splits, one run diverging) written through
`normbench.results.store` and read back row by row equals the in-memory `CellResult` it came from, and its reported
held-out losses are the mean cross-entropy over exactly the real examples, recomputed in float64."""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.core.axes import run_columns
from normbench.core.grid import Cell, plan
from normbench.core.sweep import device_data, train_cell
from normbench.models import build_model
from normbench.norms import NORMS, WHOLE_BATCH
from normbench.results.store import AFTER_TRAINING, METRICS, atomic_write, metrics_csv
from normbench.results.table import key_text

# 10 divides none of the 48 training, 24 test and 14 validation examples: every split's last chunk is padded.
EVAL_BATCH = 10
N_VAL = 14
# Of one SGD step each: the diverging run's first step is finite, so it diverges on epoch 2, after one that did not.
EPOCHS = 4
# Each column's per-epoch Metrics array (the CSV's order differs from the NamedTuple's: test_loss comes first).
DURING = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")


@pytest.fixture(scope="module")
def trained():
    """A cell of 2 seeds x 2 learning rates, the second (1e30) diverging on its second epoch, trained as a study
    trains it."""
    config = tiny_config(norms=("batch",), init_scales=(1.0,), seeds=(0, 1), learning_rates=(0.1, 1e30))
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, n_val=N_VAL),
        train=dataclasses.replace(
            config.train, epochs=EPOCHS, steps_per_epoch=1, eval_batch_size=EVAL_BATCH, test_every=1
        ),
    )
    held_out = tiny_dataset(n_train=N_VAL, seed=1)
    dataset = dataclasses.replace(tiny_dataset(), val_x=held_out.train_x, val_y=held_out.train_y)
    cell = Cell("mlp", "batch", "sgd", 8)
    states, result = train_cell(config, cell, dataset, device_data(dataset))
    return config, dataset, cell, states, result


def run_of(config, cell):
    """`row -> (seed index, run index)` of a metrics.csv row, by its key columns among the plan's run identities
    (seed-major: identity index = s x runs + k)."""
    keys = run_columns(config)
    identities = [tuple(key_text(identity[c]) for c in keys) for identity in plan(config, cell).keys()]
    runs = len(identities) // len(config.sweep.seeds)
    return lambda row: divmod(identities.index(tuple(row[c] for c in keys)), runs)


def read_back(config, result, tmp_path):
    atomic_write(tmp_path / METRICS, metrics_csv(config, [result]))
    with open(tmp_path / METRICS, newline="") as f:
        return list(csv.DictReader(f))


def test_every_metrics_csv_cell_is_its_runs_in_memory_value(trained, tmp_path):
    """Each row, located by its key columns among the plan's run identities (seed-major: index = s x runs + k),
    holds in every per-epoch column that run's value at that epoch, and in each after-training column its value
    on the last epoch's row and NaN before. test_loss and test_acc (val_loss and val_acc) differ, so columns
    written into each other's places show."""
    config, _, cell, _, result = trained
    m = result.metrics
    run = run_of(config, cell)
    rows = read_back(config, result, tmp_path)
    assert len(rows) == m.train_loss[..., 0].size * EPOCHS
    seen = set()
    for row in rows:
        s, k = run(row)
        epoch = int(row["epoch"])
        seen.add((s, k, epoch))
        for column in DURING:
            expected = getattr(m, column)[s, k, epoch - 1]
            np.testing.assert_allclose(float(row[column]), expected, rtol=1e-6, err_msg=f"{column} {s} {k} {epoch}")
        for column in AFTER_TRAINING:
            expected = getattr(m, column)[s, k] if epoch == EPOCHS else np.nan
            np.testing.assert_allclose(float(row[column]), expected, rtol=1e-6, err_msg=f"{column} {s} {k} {epoch}")
    assert len(seen) == len(rows), "a run's epoch written twice"
    finite = m.diverged_epoch == 0
    assert finite.any() and not np.isnan(m.val_loss[finite]).any(), "the validation split was evaluated"
    for loss, acc in (("test_loss", "test_acc"), ("val_loss", "val_acc")):
        assert (getattr(m, loss)[finite] != getattr(m, acc)[finite]).all(), "else a swap could not show"
    assert not np.isnan(m.test_acc_batch_stats[finite]).any(), "the after-training columns were measured"


def test_the_diverged_column_is_1_from_the_epoch_the_run_diverged_on(trained, tmp_path):
    """The `diverged` column is 1 on the epoch a run's loss first went non-finite and every epoch after, 0 before;
    the runs that never diverge have 0 on every row."""
    config, _, cell, _, result = trained
    diverged = result.metrics.diverged_epoch
    # lr 1e30 diverges on epoch 2 in both seeds (its first step's loss is the finite one at init); lr 0.1 never does.
    np.testing.assert_array_equal(diverged, [[0, 2], [0, 2]])
    run = run_of(config, cell)
    column = np.zeros_like(result.metrics.train_loss, dtype=int)
    for row in read_back(config, result, tmp_path):
        s, k = run(row)
        column[s, k, int(row["epoch"]) - 1] = int(row["diverged"])
    np.testing.assert_array_equal(column[:, 0], 0)
    np.testing.assert_array_equal(column[:, 1], [[0, 1, 1, 1]] * 2)


def eval_mode_mean_loss(model, states, x, y):
    """The mean cross-entropy over the examples (x, y), in float64, of each run's eval-mode model: per run of the
    grid `states` ([seeds, runs])."""
    with jax.enable_x64(True):
        x64 = jnp.asarray(x, jnp.float64)

        def logits(params, batch_stats):
            variables = jax.tree.map(
                lambda a: jnp.asarray(a, jnp.float64), {"params": params, "batch_stats": batch_stats}
            )
            return model.apply(variables, x64, train=False)

        out = np.asarray(jax.vmap(jax.vmap(logits))(states.params, states.batch_stats), np.float64)
    shifted = out - out.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_p, np.broadcast_to(y[:, None], log_p.shape[:-1] + (1,)), -1)[..., 0].mean(-1)


def test_held_out_losses_are_the_mean_over_the_real_examples_when_the_eval_batch_pads(trained):
    """With an evaluation batch (10) that divides neither the 24 test nor the 14 validation examples, the last
    epoch's reported test_loss and val_loss equal the float64 mean cross-entropy of the final state's eval-mode
    model over exactly those examples: the padding that fills the last chunk adds nothing."""
    config, dataset, _, states, result = trained
    finite = result.metrics.diverged_epoch == 0
    model = build_model("mlp", config.model, NORMS["batch"].make(config.norm, WHOLE_BATCH), dataset.num_classes)
    for metric, (x, y) in (
        ("test_loss", (dataset.test_x, dataset.test_y)),
        ("val_loss", (dataset.val_x, dataset.val_y)),
    ):
        assert len(x) % EVAL_BATCH, "the last chunk must be padded"
        expected = eval_mode_mean_loss(model, states, x, y)
        reported = getattr(result.metrics, metric)[..., -1]
        np.testing.assert_allclose(reported[finite], expected[finite], rtol=1e-5, err_msg=metric)
