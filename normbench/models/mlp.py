"""`mlp`: the textbook's multilayer perceptron, each hidden layer Dense -> Norm -> activation."""

from collections.abc import Callable

import flax.linen as nn

from normbench.models.masks import batch_mask
from normbench.norms import NormFactory


class MLP(nn.Module):
    hidden: tuple[int, ...]
    num_classes: int
    norm: NormFactory
    activation: Callable
    kernel_init: Callable

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=self.kernel_init)(x)
            x = self.norm(train)(x, mask=batch_mask(mask, x))
            x = self.activation(x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)
