"""The model registry: name -> `ModelSpec`, plus the init schemes and activations models share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import ConfigError, ModelConfig
from normbench.models import cnn, mlp, resnet, vit
from normbench.norms import NormFactory


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # A Flax module built as module(widths, num_classes, norm factory, activation, kernel_init,
    # standardize_weights) and applied as model(x, train). standardize_weights: weight-standardize the kernels
    # that feed a norm.
    module: type[nn.Module]
    # The layer widths from the config; they are also the channel counts the norms see, so norm options are
    # checked against them before anything is traced.
    widths: Callable[[ModelConfig], tuple[int, ...]]
    # Whether each normalized layer calls `normbench.models.probes.record`, so layer diagnostics can see it.
    records_layers: bool = False
    # The module's further fields, from the config and the norm's `batch_dependent` (the ViT's shape, placement,
    # and whether its norm sees the tokens as positions or as examples).
    options: Callable[[ModelConfig, bool], dict] = lambda config, batch_dependent: {}
    # Raises ConfigError on model options it cannot build.
    check: Callable[[ModelConfig], None] = lambda config: None
    # Why it takes no `<norm>+ws` norm, or "" when it does: that needs each norm's input to be one kernel's output.
    refuses_standardized: str = ""
    # Examples per forward pass of an evaluation on a CPU, where passes smaller than a chunk are faster (None: one
    # pass per chunk): at most `cpu_eval_piece` of each run's, and `cpu_eval_pass` of all the runs a pass vmaps
    # together. The CNN at batch 128, 8 runs, evaluated an image and run in 5.4 us in pieces of 100 against
    # 23.7 us in one pass of 1,000 (a hypothesis for why: its im2col patches outgrow the cache); at 4 runs pieces
    # of 200 and 500 were slower than 100; at 40 runs pieces of 10-20 evaluated in 0.5-0.6 of the time pieces of
    # 100 took, and 40 in 0.85; the MLP is slower in pieces. Measured on these two alone.
    cpu_eval_piece: int | None = None
    cpu_eval_pass: int | None = None


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", mlp.MLP, lambda config: config.hidden, records_layers=True),
    "cnn": ModelSpec(
        "cnn", cnn.CNN, lambda config: config.channels, records_layers=True, cpu_eval_piece=100, cpu_eval_pass=800
    ),
    "resnet20": ModelSpec("resnet20", resnet.ResNet20, lambda config: config.channels),
    "vit": ModelSpec(
        "vit",
        vit.ViT,
        lambda config: (config.width,) * vit.norm_count(config),
        records_layers=True,
        options=lambda config, batch_dependent: {
            "patch_size": config.patch_size,
            "depth": config.depth,
            "heads": config.heads,
            "mlp_ratio": config.mlp_ratio,
            "norm_placement": config.norm_placement,
            "batch_dependent_norm": batch_dependent,
        },
        check=vit.check,
        refuses_standardized=vit.RESIDUAL_INPUTS,
    ),
}

ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid, "gelu": nn.gelu}

# Unit-scale kernels; the sweep's init_scale multiplies them afterwards (`scale_kernels`), so one seed draws
# the same weight directions at every scale. He and Xavier are the textbook's: untruncated normals.
KERNEL_INITS: dict[str, Callable] = {
    "std": jax.nn.initializers.normal(1.0),
    "he": jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "xavier": jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
}


def check_model(name: str, config: ModelConfig) -> None:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    for key, table in (("activation", ACTIVATIONS), ("init", KERNEL_INITS)):
        value = getattr(config, key)
        if value not in table:
            raise ConfigError(f"unknown model.{key} {value!r}; valid: {', '.join(table)}")
    MODELS[name].check(config)


def check_pair(model: str, norm) -> None:
    """Refuse a model that cannot take `norm` (a `NormSpec`) at all, whatever the options."""
    if norm.standardizes_weights and MODELS[model].refuses_standardized:
        raise ConfigError(
            f"model {model!r} takes no +ws norm such as {norm.name!r}: {MODELS[model].refuses_standardized}"
        )


def build_model(
    name: str,
    config: ModelConfig,
    norm: NormFactory,
    num_classes: int,
    *,
    fuses_activation: bool = False,
    standardize_weights: bool = False,
    batch_dependent: bool = True,
) -> nn.Module:
    """The model `name` around the norm from `norm` (a NormSpec's factory). Pass the spec's `fuses_activation`:
    when the norm applies its own nonlinearity, every activation of the model becomes the identity, so none is
    stacked on it. `standardize_weights` weight-standardizes the kernels that feed the norm (`<norm>+ws`).
    `batch_dependent`, the spec's, matters to the ViT alone: a norm that is not sees each token as an example."""
    check_model(name, config)
    spec = MODELS[name]
    activation = identity if fuses_activation else ACTIVATIONS[config.activation]
    return spec.module(
        spec.widths(config),
        num_classes,
        norm,
        activation,
        KERNEL_INITS[config.init],
        standardize_weights,
        **spec.options(config, batch_dependent),
    )


def norm_positions(name: str, config: ModelConfig, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per normalized layer of model `name`, the positions per example that a batch statistic reduces over with
    the examples (1 for a Dense layer, height x width for a conv): a BN statistic over a batch of B holds
    B x positions values (the ViT's tokens). From shapes alone (`jax.eval_shape`), nothing computed."""
    seen = []

    def shape_of(x):
        seen.append(int(np.prod(x.shape[1:-1])))
        return x

    def norm(train):
        return shape_of

    model = build_model(name, config, norm, 10)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return tuple(seen)


def identity(x):
    return x


def scale_kernels(params, scale):
    """Multiply every weight matrix (not biases or norm parameters) by `scale`, a traced value axis."""
    return jax.tree_util.tree_map_with_path(lambda path, p: p * scale if path[-1].key == "kernel" else p, params)
