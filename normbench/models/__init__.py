"""The model registry: name -> `ModelSpec`, plus the init schemes and activations models share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from normbench.config import ConfigError, ModelConfig
from normbench.models import cnn, mlp, resnet
from normbench.norms import NormFactory


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # (config, norm factory, num_classes, kernel_init, activation) -> nn.Module applied as
    # model(x, train, mask=None), where mask (batch,) marks the real examples of a padded batch
    build: Callable[..., nn.Module]
    # The channel counts the norms see, so norm options are checked before anything is traced.
    norm_channels: Callable[[ModelConfig], tuple[int, ...]]


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", mlp.build, mlp.norm_channels),
    "cnn": ModelSpec("cnn", cnn.build, cnn.norm_channels),
    "resnet20": ModelSpec("resnet20", resnet.build, resnet.norm_channels),
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


def build_model(name: str, config: ModelConfig, norm: NormFactory, num_classes: int) -> nn.Module:
    check_model(name, config)
    return MODELS[name].build(config, norm, num_classes, KERNEL_INITS[config.init], ACTIVATIONS[config.activation])


def scale_kernels(params, scale):
    """Multiply every weight matrix (not biases or norm parameters) by `scale`, a traced value axis."""
    return jax.tree_util.tree_map_with_path(lambda path, p: p * scale if path[-1].key == "kernel" else p, params)
