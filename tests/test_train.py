"""The vmapped grid is the same runs done one by one; divergence stays in its run; seeds decide everything."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.config import ConfigError
from normbench.core.grid import Cell, plan
from normbench.core.sweep import check_fits, device_data, run_sweep, train_cell
from normbench.core.train import make_train
from normbench.validate import validate

TOL = dict(rtol=2e-4, atol=2e-5)


def solo_runner(config, cell, dataset):
    """One run at a time: the plain jitted `train`, no vmap."""
    train = jax.jit(make_train(config, cell, dataset.num_classes, len(dataset.train_x)))
    data = device_data(dataset)
    ghost = np.int32(cell.batch_size)

    def run(seed, init_scale, lr):
        values = {"init_scale": np.float32(init_scale), "learning_rate": np.float32(lr), "ghost_size": ghost}
        return train(np.uint32(seed), values, data)

    return run


def solo(config, cell, dataset, seed, init_scale, lr):
    return solo_runner(config, cell, dataset)(seed, init_scale, lr)


@pytest.mark.parametrize("norm", ["batch", *(pytest.param(n, marks=pytest.mark.slow) for n in ("none", "layer"))])
def test_vmapped_grid_equals_runs_one_by_one(norm):
    config = tiny_config(norms=(norm,), learning_rates=(0.1, 0.3))
    dataset, cell = tiny_dataset(), Cell("mlp", norm, "sgd", 8)
    _, values = plan(config, cell).arrays()
    states, result = train_cell(config, cell, dataset, device_data(dataset))
    run = solo_runner(config, cell, dataset)
    for s, seed in enumerate(config.sweep.seeds):
        for k, (scale, lr) in enumerate(zip(values["init_scale"], values["learning_rate"])):
            state, metrics = run(seed, scale, lr)
            for name, expected in metrics._asdict().items():
                np.testing.assert_allclose(getattr(result.metrics, name)[s, k], expected, **TOL, err_msg=name)
            for got, expected in zip(jax.tree.leaves(states[:2]), jax.tree.leaves(state[:2])):
                np.testing.assert_allclose(got[s, k], expected, **TOL)


def test_a_diverging_run_is_flagged_and_leaves_its_siblings_untouched():
    config = tiny_config(norms=("none",), init_scales=(1.0,), seeds=(0,), learning_rates=(0.1, 1e30))
    dataset, cell = tiny_dataset(), Cell("mlp", "none", "sgd", 8)
    (result,) = run_sweep(config, dataset)
    assert result.metrics.diverged_epoch[0, 0] == 0
    assert result.metrics.diverged_epoch[0, 1] == 1
    _, sibling = solo(config, cell, dataset, 0, 1.0, 0.1)
    np.testing.assert_allclose(result.metrics.train_loss[0, 0], sibling.train_loss, **TOL)
    np.testing.assert_allclose(result.metrics.test_acc[0, 0], sibling.test_acc, **TOL)


def test_same_seed_same_result_and_different_seeds_differ():
    config = tiny_config(norms=("batch",), init_scales=(1.0,))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    run = solo_runner(config, cell, dataset)
    a, b, c = (run(seed, 1.0, 0.1)[1] for seed in (0, 0, 1))
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    assert not np.allclose(a.train_loss, c.train_loss)


def test_init_scale_multiplies_the_same_unit_draw():
    config = tiny_config(norms=("none",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1))
    run = solo_runner(config, Cell("mlp", "none", "sgd", 8), tiny_dataset())
    # With a learning rate of ~0 the params stay at their init: kernels at two scales differ by the ratio.
    big, small = (run(0, scale, 1e-30)[0].params for scale in (1.0, 0.01))
    for layer in ("Dense_0", "Dense_1", "Dense_2"):
        np.testing.assert_allclose(small[layer]["kernel"], 0.01 * big[layer]["kernel"], rtol=1e-6)
        np.testing.assert_allclose(small[layer]["bias"], 0.0, atol=1e-20)
    np.testing.assert_allclose(np.std(big["Dense_1"]["kernel"]), 1.0, rtol=0.3)


@pytest.mark.parametrize("sampling", ["permutation", pytest.param("replacement", marks=pytest.mark.slow)])
def test_each_epoch_takes_the_configured_number_of_steps(sampling):
    config = tiny_config(norms=("batch_renorm",), init_scales=(1.0,), seeds=(0,))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, sampling=sampling, steps_per_epoch=3))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch_renorm", "sgd", 8)
    state, metrics = solo(config, cell, dataset, 0, 1.0, 0.1)
    assert metrics.train_loss.shape == (2,)
    assert np.isfinite(metrics.train_loss).all()
    # BatchRenorm counts its train steps in batch_stats
    assert {int(layer["steps"]) for layer in state.batch_stats.values()} == {2 * 3}


def test_min_steps_lengthens_a_large_batchs_epochs_to_whole_passes():
    config = tiny_config(norms=("batch_renorm",), init_scales=(1.0,), seeds=(0,))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, min_steps=20))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch_renorm", "sgd", 8)
    # 48 examples make 6 steps a pass; 2 epochs of one pass (12 steps) fall short of 20, so each epoch takes 2.
    assert plan(config, cell).steps(48).per_epoch == 12
    assert plan(config, Cell("mlp", "batch_renorm", "sgd", 2)).steps(48).per_epoch == 24
    state, metrics = solo(config, cell, dataset, 0, 1.0, 0.1)
    assert metrics.train_loss.shape == (2,)
    assert {int(layer["steps"]) for layer in state.batch_stats.values()} == {2 * 12}
    both = dataclasses.replace(config, train=dataclasses.replace(config.train, steps_per_epoch=3))
    with pytest.raises(ConfigError, match="set one of them"):
        validate(both)


def test_batch_larger_than_the_data_is_rejected_before_compiling():
    with pytest.raises(ConfigError, match="batch size 64 is larger than the 48 training examples"):
        check_fits(tiny_config(batch_sizes=(64,)), tiny_dataset())
    config = tiny_config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps_per_epoch=7))
    with pytest.raises(ConfigError, match="needs 56 examples per epoch"):
        check_fits(config, tiny_dataset())
    swept = dataclasses.replace(
        config, sweep=dataclasses.replace(config.sweep, fields={"train.steps_per_epoch": (3, 7)})
    )
    with pytest.raises(ConfigError, match="steps_per_epoch=7 at batch 8 needs 56 examples per epoch"):
        check_fits(
            dataclasses.replace(swept, train=dataclasses.replace(config.train, steps_per_epoch=None)), tiny_dataset()
        )


@pytest.mark.parametrize("init, gain", [("std", None), ("he", 2.0), ("xavier", 1.0)])
def test_init_schemes_draw_the_textbooks_untruncated_normals(init, gain):
    import jax.numpy as jnp

    from normbench.config import ModelConfig
    from normbench.models import build_model
    from normbench.norms import NORMS, WHOLE_BATCH

    model = build_model("mlp", ModelConfig(hidden=(400,), init=init), NORMS["none"].make(None, WHOLE_BATCH), 10)
    kernel = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 300)), train=False)["params"]["Dense_0"]["kernel"]
    std = 1.0 if gain is None else np.sqrt(gain / 300)
    np.testing.assert_allclose(np.std(kernel), std, rtol=0.02)
    # Untruncated: about 0.27% of a normal's draws lie beyond 3 standard deviations; a truncated one has none.
    assert np.mean(np.abs(kernel) > 3 * std) > 0.001


@pytest.mark.slow
def test_chunking_the_seeds_gives_the_same_results():
    config = tiny_config(norms=("batch",), seeds=(0, 1, 2), init_scales=(1.0, 0.3))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    data = device_data(dataset)
    _, whole = train_cell(config, cell, dataset, data)
    chunked = dataclasses.replace(config, train=dataclasses.replace(config.train, chunk_size=2))
    _, sliced = train_cell(chunked, cell, dataset, data)
    for name, expected in whole.metrics._asdict().items():
        np.testing.assert_allclose(getattr(sliced.metrics, name), expected, **TOL, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "skipped"), [("test_every", ("test_acc", "test_loss")), ("train_acc_every", ("train_acc",))]
)
def test_evaluating_every_few_epochs_skips_only_its_columns_in_the_others(every, skipped):
    config = tiny_config(norms=("batch",), seeds=(0,))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=5))
    sparse = dataclasses.replace(config, train=dataclasses.replace(config.train, **{every: 2}))
    dataset, cell = tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    data = device_data(dataset)
    _, each = train_cell(config, cell, dataset, data)
    _, some = train_cell(sparse, cell, dataset, data)
    due = np.array([False, True, False, True, True])  # epochs 2 and 4, and the last
    for name in skipped:
        np.testing.assert_allclose(getattr(some.metrics, name)[..., due], getattr(each.metrics, name)[..., due], **TOL)
        assert np.isnan(getattr(some.metrics, name)[..., ~due]).all()
    kept = ("train_loss", "train_acc", "test_acc", "test_loss", "test_acc_batch_stats", "test_acc_precise")
    for name in (name for name in kept if name not in skipped):
        np.testing.assert_allclose(getattr(some.metrics, name), getattr(each.metrics, name), **TOL, err_msg=name)


@pytest.mark.parametrize("count", [1, 5, 6, 13])
def test_minibatches_are_whole_batches_of_a_fresh_permutation_per_pass(count):
    from normbench.core.train import minibatches

    key = jax.random.PRNGKey(7)
    got = np.asarray(minibatches(key, count, 50, 8, 6, "permutation"))
    passes = [np.asarray(jax.random.permutation(k, 50))[:48] for k in jax.random.split(key, -(-count // 6))]
    np.testing.assert_array_equal(got, np.concatenate(passes)[: count * 8].reshape(count, 8))


def test_minibatches_of_many_passes_trace_as_one_permutation():
    """One permutation per pass, traced in a Python loop, made `show` of train.min_steps=1176740 take 503 s."""
    from normbench.core.train import minibatches

    jaxpr = jax.make_jaxpr(lambda key: minibatches(key, 200 * 23, 3000, 128, 23, "permutation"))(jax.random.PRNGKey(0))
    assert len(jaxpr.eqns) < 50
