"""`mlp`: the textbook's multilayer perceptron, each hidden layer Dense -> Norm -> activation.

With `standardize_weights`, the hidden Dense kernels (those feeding a norm) are weight-standardized; the
classifier's is not.
"""

from collections.abc import Callable

import flax.linen as nn

from normbench.models.probes import record
from normbench.norms import NormFactory
from normbench.norms.weight_std import standardized


class MLP(nn.Module):
    hidden: tuple[int, ...]
    num_classes: int
    norm: NormFactory
    activation: Callable
    kernel_init: Callable
    standardize_weights: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        x = x.reshape((x.shape[0], -1))
        dense = standardized(nn.Dense, self.is_initializing()) if self.standardize_weights else nn.Dense
        for i, width in enumerate(self.hidden):
            pre_norm = dense(width, kernel_init=self.kernel_init)(x)
            x = self.activation(self.norm(train)(pre_norm))
            x = record(self, i, pre_norm, x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)
