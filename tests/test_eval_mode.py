"""The accuracies a run reports are the eval-mode model's: recomputed from each run's final state with Flax's
`model.apply(..., train=False)`, BatchNorm on its running averages, they equal the reported ones, and the same
computation in train mode (each batch normalized by its own statistics) gives other numbers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.core.grid import Cell
from normbench.core.sweep import device_data, train_cell
from normbench.models import build_model
from normbench.norms import NORMS, WHOLE_BATCH

# Evaluation chunks that divide the 48 training and 24 test examples: a train-mode pass over these chunks sees
# exactly the batches (no padding) that an evaluation in train mode would normalize.
EVAL_BATCH = 8


def correct_counts(model, states, x, y, train: bool):
    """Correctly classified examples of (x, y) per run of the grid `states` ([seeds, runs]), in chunks of
    EVAL_BATCH; in train mode each chunk is normalized by its own statistics and the running averages it would
    update are dropped."""

    def count(params, batch_stats):
        def logits(chunk):
            variables = {"params": params, "batch_stats": batch_stats}
            if train:
                return model.apply(variables, chunk, train=True, mutable=["batch_stats"])[0]
            return model.apply(variables, chunk, train=False)

        chunks = x.reshape((-1, EVAL_BATCH) + x.shape[1:])
        return jnp.sum(jnp.argmax(jax.vmap(logits)(chunks), -1) == y.reshape(-1, EVAL_BATCH))

    return np.asarray(jax.jit(jax.vmap(jax.vmap(count)))(states.params, states.batch_stats))


# It compiles and trains a cell's phases as a study does, which takes longer than the fast tier allows a test.
@pytest.mark.slow
def test_reported_accuracies_are_the_eval_mode_models():
    config = tiny_config(norms=("batch",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, eval_batch_size=EVAL_BATCH))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    states, result = train_cell(config, cell, dataset, device_data(dataset))
    model = build_model("mlp", config.model, NORMS["batch"].make(config.norm, WHOLE_BATCH), dataset.num_classes)
    splits = {"train_acc": (dataset.train_x, dataset.train_y), "test_acc": (dataset.test_x, dataset.test_y)}
    for metric, (x, y) in splits.items():
        reported = getattr(result.metrics, metric)[..., -1] * len(x)
        np.testing.assert_allclose(reported, np.rint(reported), atol=1e-4)  # each an accuracy over len(x): count / n
        eval_mode = correct_counts(model, states, x, y, train=False)
        np.testing.assert_array_equal(np.rint(reported), eval_mode, err_msg=metric)
        # Else this test could not tell an evaluation in train mode from one in eval mode.
        assert (correct_counts(model, states, x, y, train=True) != eval_mode).any(), metric
