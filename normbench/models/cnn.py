"""`cnn`: a small convolutional net in which norms act over channels, so GroupNorm's groups are channel groups.

Each block is a 3x3 conv with stride 2 -> Norm -> activation (28x28 MNIST: 14, 7, 4 pixels at 16, 32, 64
channels by default), then global average pooling and a Dense classifier. With `standardize_weights`, the
conv kernels (those feeding a norm) are weight-standardized; the classifier's is not.
"""

from collections.abc import Callable

import flax.linen as nn

from normbench.models.conv import Conv
from normbench.models.probes import record
from normbench.norms import NormFactory
from normbench.norms.weight_std import standardized


class CNN(nn.Module):
    channels: tuple[int, ...]
    num_classes: int
    norm: NormFactory
    activation: Callable
    kernel_init: Callable
    standardize_weights: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        conv = standardized(Conv, self.is_initializing()) if self.standardize_weights else Conv
        for i, width in enumerate(self.channels):
            pre_norm = conv(width, (3, 3), strides=(2, 2), padding="SAME", kernel_init=self.kernel_init, train=train)(x)
            x = self.activation(self.norm(train)(pre_norm))
            x = record(self, i, pre_norm, x)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)
