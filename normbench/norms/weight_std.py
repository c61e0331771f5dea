"""Weight Standardization (Qiao, Wang, Liu, Shen & Yuille, 2019): a weight transform that composes with any
activation norm, registered as `<norm>+ws`.

Each kernel of a Dense or Conv layer that feeds a norm is standardized per output channel before use,
W_hat = (W - mean(W)) / sqrt(var(W) + eps), the mean and biased variance over the fan-in (every kernel axis
but the last). The layer's output then no longer depends on the scale of W, so `init_scale` leaves it
unchanged. Kernels are stored unstandardized, with the plain layers' shapes, so parameter counts and
`scale_kernels` see no difference (Flax names the layers `Map_variablesDense_0` etc.).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from normbench.norms.registry import NormSpec

# Far below norm.epsilon: the sweep initializes kernels down to std 1e-4 x N(0, 1) (variance 1e-8), where a
# larger eps would dominate the variance and bring back the dependence on scale that WS removes.
EPSILON = 1e-12


def standardize(kernel):
    fan_in = tuple(range(kernel.ndim - 1))
    mean = jnp.mean(kernel, axis=fan_in, keepdims=True)
    var = jnp.mean(jnp.square(kernel - mean), axis=fan_in, keepdims=True)
    return (kernel - mean) / jnp.sqrt(var + EPSILON)


def standardized(layer, initializing: bool):
    """`layer` (a Flax class with a `kernel` param) whose kernel is standardized on every read. Pass the calling
    module's `is_initializing()`: map_variables must create the kernel at init, but told to do so outside init
    it drops the params whenever another collection (`batch_stats`) is mutable."""

    def trans_in(variables):
        params = variables["params"]
        return {**variables, "params": {**params, "kernel": standardize(params["kernel"])}}

    return nn.map_variables(layer, "params", trans_in_fn=trans_in, init=initializing)


def with_weight_standardization(spec: NormSpec) -> NormSpec:
    """`spec` behind standardized kernels, named `<name>+ws`; the models read `standardizes_weights`."""
    return dataclasses.replace(
        spec,
        name=spec.name + "+ws",
        summary=f"{spec.summary}; kernels feeding it weight-standardized",
        standardizes_weights=True,
    )
