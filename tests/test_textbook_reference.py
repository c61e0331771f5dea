"""The init-scale study in float64 is the textbook's experiment: normbench's runs and the NumPy port of the book's
network (`benchmarks/textbook_numpy.py`), fed the same images, initial weights and minibatches, agree to 1e-10 in
their train losses, accuracies and final weights, BatchNorm's running statistics included."""

from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks.textbook_numpy import Net
from normbench.config import load_config, set_fields
from normbench.core.grid import Cell, plan
from normbench.core.sweep import device_data, make_training, train_cell
from normbench.core.train import precision_scope
from normbench.data import load

STUDY = Path(__file__).parents[1] / "configs" / "init_scale.py"
# XLA and NumPy round float64 differently (summation order; autodiff against the book's hand-written backward
# pass): ~1e-16 relative, still below 1e-15 after these 11 steps.
RTOL = 1e-10
# A Dense bias feeding BatchNorm has a gradient of exactly 0, so its value is rounding noise on both sides (~1e-18).
ATOL = 1e-15


def study_config():
    """The study's first epoch (its one step) and the next 10 steps, one seed, at std 0.16 (where the plain net
    learns) and 0.0074 (where only BN does)."""
    config = load_config(STUDY)
    scales = config.sweep.init_scales
    return set_fields(config, {"train.epochs": 2, "sweep.seeds": (0,), "sweep.init_scales": (scales[3], scales[8])})


def replacement_batches(config, seed, n_train, batch):
    """Each epoch's minibatch indices as normbench draws them under `train.sampling=replacement`: the seed's key
    split into init, data and PreciseBN keys, the data key into one key per epoch, each epoch's steps drawn
    with replacement, of which the first epoch takes `train.first_epoch_steps`. (Drawn here, since a run does not
    hand them out; any other draw would put the losses apart at the first step.)"""
    data_key = jax.random.split(jax.random.PRNGKey(seed), 3)[1]
    epoch_keys = jax.random.split(data_key, config.train.epochs)
    steps = config.train.steps_per_epoch
    drawn = [np.asarray(jax.random.randint(key, (steps, batch), 0, n_train)) for key in epoch_keys]
    return [drawn[0][: config.train.first_epoch_steps], *drawn[1:]]


def train_numpy(net, dataset, epochs, rate):
    """The NumPy net stepped through each epoch's minibatches: per epoch its mean minibatch loss and its training
    accuracy on the running averages after it."""
    x = flat(dataset.train_x)
    losses, accuracies = [], []
    for batches in epochs:
        losses.append(np.mean([net.step(x[i], dataset.train_y[i], rate) for i in batches]))
        accuracies.append(net.accuracy(x, dataset.train_y))
    return losses, accuracies


def flat(images):
    return images.reshape(len(images), -1).astype(np.float64)


def run_of(tree, k):
    """Run k of the one seed's runs in a grid's arrays ([seeds, runs, ...])."""
    return jax.tree.map(lambda a: np.asarray(a[0, k]), tree)


def layers(tree, name, count):
    return [tree[f"{name}_{i}"] for i in range(count)]


def assert_close(got, expected, what):
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{what} {i}")


@pytest.fixture(scope="module")
def dataset():
    return load(study_config().data)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_float64_init_scale_runs_equal_the_textbooks_numpy(dataset, norm):
    config = study_config()
    cell = Cell("mlp", norm, "sgd", config.sweep.batch_sizes[0])
    n_train = len(dataset.train_x)
    with precision_scope("float64"):
        data = device_data(dataset, "float64")
        states, result = train_cell(config, cell, dataset, data)
        seeds, values = plan(config, cell).arrays()
        start = make_training(config, cell, dataset.num_classes, n_train).start
        epochs = replacement_batches(config, int(seeds[0]), n_train, cell.batch_size)
        for k in range(len(config.sweep.init_scales)):
            run = {name: v[k] for name, v in values.items()}
            initial = start(seeds[0], run, data).train.params
            net = Net([np.asarray(d["kernel"]) for d in layers(initial, "Dense", 6)], use_bn=norm == "batch")
            # The rate the run trained with: every value axis reaches the program as float32, even in float64, so
            # it is 0.01 - 2.2e-10; 0.01 itself puts the losses 1e-9 apart after 11 steps.
            rate = float(run["learning_rate"])
            losses, accuracies = train_numpy(net, dataset, epochs, rate)
            reported = run_of(result.metrics, k)
            np.testing.assert_allclose(reported.train_loss, losses, rtol=RTOL, err_msg="train_loss")
            np.testing.assert_allclose(reported.train_acc, accuracies, rtol=RTOL, err_msg="train_acc")
            test_acc = net.accuracy(flat(dataset.test_x), dataset.test_y)
            np.testing.assert_allclose(reported.test_acc[-1], test_acc, rtol=RTOL, err_msg="test_acc")

            final = run_of(states, k)
            dense = layers(final.params, "Dense", 6)
            assert_close(net.W, [d["kernel"] for d in dense], "kernel")
            assert_close(net.b, [d["bias"] for d in dense], "bias")
            if norm == "batch":
                bn, stats = layers(final.params, "BatchNorm", 5), layers(final.batch_stats, "BatchNorm", 5)
                assert_close(net.gamma, [d["scale"] for d in bn], "BN scale")
                assert_close(net.beta, [d["bias"] for d in bn], "BN bias")
                assert_close(net.running_mean, [d["mean"] for d in stats], "running mean")
                assert_close(net.running_var, [d["var"] for d in stats], "running var")
