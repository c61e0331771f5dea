"""Every model works with every norm; parameter counts are pinned to their papers'."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_dataset

from normbench.config import ModelConfig, NormConfig
from normbench.models import MODELS, build_model
from normbench.norms import NORMS, WHOLE_BATCH


def count(params):
    return sum(p.size for p in jax.tree.leaves(params))


# Every model small: the ViT cuts the 8x8 test images into 4 tokens of 4x4 pixels.
SMALL = ModelConfig(hidden=(8, 8), channels=(4, 8), patch_size=4, width=8, depth=1, heads=2, mlp_ratio=2)


# ResNet-20 and the ViT take each norm a second or more to trace: the full suite runs them.
@pytest.mark.parametrize(
    "model", [pytest.param(m, marks=pytest.mark.slow) if m in ("resnet20", "vit") else m for m in MODELS]
)
@pytest.mark.parametrize("norm", list(NORMS))
def test_every_model_with_every_norm(model, norm):
    config = SMALL
    spec = NORMS[norm]
    net = build_model(
        # batch_renorm's schedule needs the run's length, which the trainer otherwise fills in
        model,
        config,
        spec.make(NormConfig(num_groups=2, renorm_train_steps=10), WHOLE_BATCH),
        5,
        fuses_activation=spec.fuses_activation,
        batch_dependent=spec.batch_dependent,
    )
    x = jnp.ones((3, 8, 8, 2))
    variables = net.init(jax.random.PRNGKey(0), x, train=False)
    logits, updates = net.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (3, 5)
    assert ("batch_stats" in updates and bool(updates["batch_stats"])) == NORMS[norm].running_stats


@pytest.mark.slow
def test_parameter_counts():
    # The textbook MLP: 784*100 + 4*100*100 + 100*10 weights, plus biases, plus BN's scale and shift.
    mlp = build_model("mlp", ModelConfig(), NORMS["batch"].make(NormConfig(), WHOLE_BATCH), 10)
    params = mlp.init(jax.random.PRNGKey(0), jnp.ones((1, 28, 28, 1)), train=False)["params"]
    assert count(params) == 784 * 100 + 4 * 100 * 100 + 100 * 10 + 5 * 100 + 10 + 5 * 2 * 100
    # ResNet-20 for CIFAR-10: He et al. report 0.27M parameters.
    resnet = build_model(
        "resnet20", ModelConfig(channels=(16, 32, 64)), NORMS["batch"].make(NormConfig(), WHOLE_BATCH), 10
    )
    params = resnet.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), train=False)["params"]
    assert count(params) == 272_474


@pytest.mark.parametrize(
    "kernel, strides, use_bias",
    [((3, 3), 1, True), ((3, 3), (2, 2), True), ((1, 1), 2, False), ((3, 3), 2, False), ((2, 3), (1, 2), True)],
)
@pytest.mark.parametrize("batch", [3, 17])  # on a CPU, the input gradient by `unpatch` and by autodiff
def test_patch_conv_is_flax_conv(kernel, strides, use_bias, batch):
    """The models' im2col `Conv` computes what `nn.Conv` does, from a parameter tree of the same names and shapes."""
    import flax.linen as nn

    from normbench.models.conv import Conv

    x = jax.random.normal(jax.random.PRNGKey(0), (batch, 9, 9, 5))
    ours = Conv(7, kernel, strides, use_bias=use_bias)
    flax = nn.Conv(7, kernel, strides, padding="SAME", use_bias=use_bias)
    params = flax.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    assert jnp.allclose(ours.apply(params, x), flax.apply(params, x), rtol=1e-5, atol=1e-5)
    # An evaluation builds its patches otherwise (`patches_stacked`), to the same products.
    evaluating = Conv(7, kernel, strides, use_bias=use_bias, train=False)
    assert np.array_equal(evaluating.apply(params, x), ours.apply(params, x))
    # The backward pass too: the patches' transpose (pads of the slices) must route each gradient to its pixel.
    grads = [jax.grad(lambda p, x, m=m: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))(params, x)
             for m in (ours, flax)]  # fmt: skip
    # float32 sums in another order: the larger batch's bias gradients reach ~1e3
    assert all(jnp.allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))
               for a, b in zip(*map(jax.tree.leaves, grads)))  # fmt: skip


@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [((2, 28, 28, 1), (3, 3), (2, 2), "SAME"), ((3, 14, 14, 8), (3, 3), (2, 2), "SAME"),
     ((2, 7, 7, 16), (3, 3), (2, 2), "SAME"), ((2, 9, 9, 5), (3, 3), (1, 1), "SAME"),
     ((2, 9, 10, 3), (2, 3), (1, 2), "SAME"), ((2, 9, 9, 3), (3, 3), (2, 2), "VALID"),
     ((2, 8, 8, 4), (1, 1), (2, 2), "SAME")],
)  # fmt: skip
def test_unpatch_is_autodiffs_transpose_of_the_patches_to_the_bit(shape, kernel, strides, padding):
    """`unpatch` sums each pixel's offsets in autodiff's order (the others are zeros), and `formed_once` multiplies by
    the identity, so the input gradient of `patches_formed_once` is autodiff's bit for bit, vmapped over runs too."""
    from normbench.models.conv import patches, patches_formed_once

    x = jax.random.normal(jax.random.PRNGKey(0), (4, *shape))  # 4 runs
    out, autodiff = jax.vjp(jax.vmap(lambda x: patches(x, kernel, strides, padding)), x)
    g = jax.random.normal(jax.random.PRNGKey(1), out.shape)
    formed, once = jax.vjp(jax.vmap(lambda x: patches_formed_once(x, kernel, strides, padding)), x)
    assert np.array_equal(formed, out)
    assert np.array_equal(once(g)[0], autodiff(g)[0])


@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [((2, 28, 28, 1), (3, 3), (2, 2), "SAME"), ((2, 7, 7, 16), (3, 3), (2, 2), "SAME"),
     ((2, 9, 10, 3), (2, 3), (1, 2), "SAME"), ((2, 9, 9, 3), (3, 3), (2, 2), "VALID"),
     ((2, 8, 8, 4), (1, 1), (2, 2), "SAME")],
)  # fmt: skip
def test_stacked_patches_are_the_patches(shape, kernel, strides, padding):
    """An evaluation's patches list each pixel where `patches` does (offset-major, then channels), vmapped over
    runs as a sweep evaluates them."""
    from normbench.models.conv import patches, patches_stacked

    x = jax.random.normal(jax.random.PRNGKey(0), (4, *shape))  # 4 runs
    built = [jax.jit(jax.vmap(lambda x, f=f: f(x, kernel, strides, padding)))(x) for f in (patches, patches_stacked)]
    assert np.array_equal(*built)


def test_an_evaluation_computes_the_same_bits_with_either_patches(monkeypatch):
    """The committed studies were evaluated with `patches`: a CNN cell's evaluations (in its epoch and its
    `finish`, BN's batch-statistics passes among them) give the same bits with the stacks, where XLA fuses the
    layer below's norm and activation into other kernels. Checked for every norm of every committed study with a
    CNN when the stacks came in (docs/performance.md); here on a small cell."""
    from normbench.core.grid import Cell, plan
    from normbench.core.sweep import compile_cell, device_data
    from normbench.models import conv

    config = dataclasses.replace(tiny_config(), model=ModelConfig(channels=(4, 8, 8)))
    cell, dataset = Cell("cnn", "batch", "sgd", 8), tiny_dataset()
    seeds, values = plan(config, cell).arrays()
    data = device_data(dataset, config.train.precision)
    monkeypatch.setenv("NORMBENCH_COMPILATION_CACHE", "0")  # the two programs share a key
    outputs = []
    for form in (conv.patches, conv.patches_stacked):
        monkeypatch.setattr(conv, "EVAL_PATCHES", form)  # read while tracing
        program = compile_cell(config, cell, dataset, data).phases
        state, per_epoch = program.epoch(seeds, values, data, program.start(seeds, values, data), np.int32(1))
        outputs.append(jax.tree.leaves((state, per_epoch, program.finish(seeds, values, data, state))))
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(*outputs))


def test_norm_positions_are_the_values_per_example_each_statistic_reduces_over():
    from normbench.models import norm_positions

    assert norm_positions("mlp", ModelConfig(hidden=(8, 8)), (28, 28, 1)) == (1, 1)
    # 3x3 stride-2 convs, SAME padding: 28 -> 14 -> 7 -> 4 pixels a side
    assert norm_positions("cnn", ModelConfig(channels=(4, 4, 4)), (28, 28, 1)) == (196, 49, 16)


def test_vit_norm_positions_are_its_tokens_and_placement_sets_its_norms():
    from normbench.models import norm_positions

    # 7x7 patches of a 28x28 digit: 16 tokens; two norms per block, and pre-norm's final one
    assert norm_positions("vit", ModelConfig(depth=2), (28, 28, 1)) == (16,) * 5
    assert norm_positions("vit", ModelConfig(depth=2, norm_placement="post"), (28, 28, 1)) == (16,) * 4
    assert norm_positions("vit", ModelConfig(depth=1, patch_size=4), (28, 28, 1)) == (49,) * 3


# A few norms in the fast tier (one per kind of statistic, each in one placement), every pair in the full suite.
FAST_IN_VIT = (("layer", "pre"), ("batch", "post"), ("power", "pre"))


@pytest.mark.parametrize(
    "norm, placement",
    [
        pair if pair in FAST_IN_VIT else pytest.param(*pair, marks=pytest.mark.slow)
        for pair in itertools.product(NORMS, ["pre", "post"])
    ],
)
def test_vit_trains_a_step_with_every_norm(norm, placement):
    """Every registered norm in both placements: a finite loss and gradient, and an SGD step that lowers the
    loss on the batch it was taken on (but for instance norm, degenerate in a token)."""
    import dataclasses

    import optax

    spec = NORMS[norm]
    if spec.standardizes_weights:
        return  # refused: see test_vit_refuses_weight_standardization
    config = dataclasses.replace(SMALL, norm_placement=placement, activation="gelu", init="xavier")
    net = build_model(
        "vit",
        config,
        spec.make(NormConfig(num_groups=2, renorm_train_steps=10), WHOLE_BATCH),
        3,
        fuses_activation=spec.fuses_activation,
        batch_dependent=spec.batch_dependent,
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 2))
    y = jnp.arange(6) % 3
    variables = net.init(jax.random.PRNGKey(0), x, train=False)

    @jax.jit  # one compile, not a dispatch per operation of the model
    def loss(params):
        logits, _ = net.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in [value, *jax.tree.leaves(grads)])
    stepped = jax.tree.map(lambda p, g: p - 0.05 * g, variables["params"], grads)
    if norm == "instance":  # a token has no positions: every instance norm outputs its beta, the logits are constant
        assert loss(stepped) == pytest.approx(value)
    else:
        assert loss(stepped) < value


def test_vit_layer_norm_normalizes_each_token_and_batch_norm_batch_times_tokens():
    """LayerNorm's statistics are per token (over channels), BatchNorm's over batch x tokens."""
    seen = {}

    def spy(name):
        def norm(train):
            def apply(v):
                seen.setdefault(name, v.shape)
                return v

            return apply

        return norm

    for name, dependent in (("layer", False), ("batch", True)):
        net = build_model("vit", SMALL, spy(name), 3, batch_dependent=dependent)
        net.init(jax.random.PRNGKey(0), jnp.ones((5, 8, 8, 2)), train=False)
    assert seen == {"layer": (5 * 4, 8), "batch": (5, 4, 8)}


def test_vit_refuses_weight_standardization_and_bad_shapes():
    import dataclasses

    from normbench.config import ConfigError
    from normbench.models import check_model

    net = build_model("vit", SMALL, NORMS["batch"].make(NormConfig(), WHOLE_BATCH), 3, standardize_weights=True)
    with pytest.raises(ConfigError, match="no \\+ws norm"):
        net.init(jax.random.PRNGKey(0), jnp.ones((2, 8, 8, 2)), train=False)
    with pytest.raises(ConfigError, match="does not divide model.width"):
        check_model("vit", dataclasses.replace(SMALL, heads=3))
    with pytest.raises(ConfigError, match="norm_placement"):
        check_model("vit", dataclasses.replace(SMALL, norm_placement="sandwich"))
    layer = NORMS["layer"].make(NormConfig(), WHOLE_BATCH)
    net = build_model("vit", dataclasses.replace(SMALL, patch_size=3), layer, 3, batch_dependent=False)
    with pytest.raises(ConfigError, match="does not divide the 8x8"):
        net.init(jax.random.PRNGKey(0), jnp.ones((2, 8, 8, 2)), train=False)
