"""`resnet20`: the CIFAR ResNet-20 of He et al. (2016), section 4.2, with the norm injected.

A 3x3 conv with `channels[0]` filters, three stages of three basic blocks (conv-norm-act, conv-norm, shortcut,
act) with `channels` filters, the first block of stages 2 and 3 striding by 2 with a 1x1 projection
shortcut, then global average pooling and a Dense classifier: 0.27M parameters at 16-32-64 channels. Every conv
feeds a norm, so `standardize_weights` weight-standardizes them all; the classifier is left as it is. With a
norm that fuses its activation, `activation` is the identity everywhere, including after the residual add.
"""

from collections.abc import Callable

import flax.linen as nn

from normbench.models.conv import Conv
from normbench.norms import NormFactory
from normbench.norms.weight_std import standardized

BLOCKS_PER_STAGE = 3


class BasicBlock(nn.Module):
    width: int
    strides: int
    norm: NormFactory
    activation: Callable
    kernel_init: Callable
    standardize_weights: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        layer = standardized(Conv, self.is_initializing()) if self.standardize_weights else Conv
        conv = lambda width, kernel, strides: layer(  # noqa: E731
            width, kernel, strides, padding="SAME", use_bias=False, kernel_init=self.kernel_init, train=train
        )
        y = conv(self.width, (3, 3), self.strides)(x)
        y = self.activation(self.norm(train)(y))
        y = conv(self.width, (3, 3), 1)(y)
        y = self.norm(train)(y)
        if x.shape != y.shape:
            x = conv(self.width, (1, 1), self.strides)(x)
            x = self.norm(train)(x)
        return self.activation(x + y)


class ResNet20(nn.Module):
    channels: tuple[int, ...]
    num_classes: int
    norm: NormFactory
    activation: Callable
    kernel_init: Callable
    standardize_weights: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        conv = standardized(Conv, self.is_initializing()) if self.standardize_weights else Conv
        x = conv(self.channels[0], (3, 3), padding="SAME", use_bias=False, kernel_init=self.kernel_init, train=train)(x)
        x = self.activation(self.norm(train)(x))
        for stage, width in enumerate(self.channels):
            for block in range(BLOCKS_PER_STAGE):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(width, strides, self.norm, self.activation, self.kernel_init, self.standardize_weights)(
                    x, train
                )
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)
