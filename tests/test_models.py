"""Every model works with every norm; parameter counts are pinned to their papers'."""

import jax
import jax.numpy as jnp
import pytest

from normbench.config import ModelConfig, NormConfig
from normbench.models import MODELS, build_model
from normbench.norms import NORMS, WHOLE_BATCH


def count(params):
    return sum(p.size for p in jax.tree.leaves(params))


# ResNet-20 takes each norm half a second to trace: the full suite runs it.
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m == "resnet20" else m for m in MODELS])
@pytest.mark.parametrize("norm", list(NORMS))
def test_every_model_with_every_norm(model, norm):
    config = ModelConfig(hidden=(8, 8), channels=(4, 8))
    spec = NORMS[norm]
    net = build_model(
        # batch_renorm's schedule needs the run's length, which the trainer otherwise fills in
        model,
        config,
        spec.make(NormConfig(num_groups=2, renorm_train_steps=10), WHOLE_BATCH),
        5,
        fuses_activation=spec.fuses_activation,
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
    "kernel, strides, use_bias", [((3, 3), 1, True), ((3, 3), (2, 2), True), ((1, 1), 2, False), ((3, 3), 2, False)]
)
def test_patch_conv_is_flax_conv(kernel, strides, use_bias):
    """The models' im2col `Conv` computes what `nn.Conv` does, from a parameter tree of the same names and shapes."""
    import flax.linen as nn

    from normbench.models.conv import Conv

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 9, 5))
    ours = Conv(7, kernel, strides, use_bias=use_bias)
    flax = nn.Conv(7, kernel, strides, padding="SAME", use_bias=use_bias)
    params = flax.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    assert jnp.allclose(ours.apply(params, x), flax.apply(params, x), rtol=1e-5, atol=1e-5)


def test_norm_positions_are_the_values_per_example_each_statistic_reduces_over():
    from normbench.models import norm_positions

    assert norm_positions("mlp", ModelConfig(hidden=(8, 8)), (28, 28, 1)) == (1, 1)
    # 3x3 stride-2 convs, SAME padding: 28 -> 14 -> 7 -> 4 pixels a side
    assert norm_positions("cnn", ModelConfig(channels=(4, 4, 4)), (28, 28, 1)) == (196, 49, 16)
