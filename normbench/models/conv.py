"""`Conv`: a 2-D convolution computed as patches times a matrix (im2col), a drop-in for `flax.linen.Conv` with the
same parameters (`kernel` (kh, kw, in, out), `bias`) and the same Flax name, so parameter trees, counts and
`scale_kernels` see no difference.

Why not `nn.Conv`: a sweep vmaps every run's own kernel, which XLA lowers to a grouped convolution, and XLA's CPU
backend runs those several times slower than the batched matrix product that the patches give; it also compiles
in half the time.

Why the patches are strided slices of the padded input, one per kernel offset, rather than
`lax.conv_general_dilated_patches`: that builds them as a convolution with an identity kernel, and its transpose
in the backward pass as an lhs-dilated one, both far off the dense rate on a CPU; slices and a concatenate are
plain copies, and their transposes pads (`benchmarks/conv_patches.py` times the two side by side).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def patches(x, kernel_size: tuple[int, int], strides: tuple[int, int], padding: str):
    """(N, H', W', kh * kw * C) patches of the NHWC `x`, listed offset-major, (kh, kw, in): the order of an HWIO
    kernel's rows."""
    pads = jax.lax.padtype_to_pads(x.shape[1:3], kernel_size, strides, padding)
    padded = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    out = [(size - k) // s + 1 for size, k, s in zip(padded.shape[1:3], kernel_size, strides)]
    offsets = [(i, j) for i in range(kernel_size[0]) for j in range(kernel_size[1])]
    return jnp.concatenate(
        [
            jax.lax.slice(
                padded,
                (0, i, j, 0),
                (padded.shape[0], i + strides[0] * (out[0] - 1) + 1, j + strides[1] * (out[1] - 1) + 1, x.shape[3]),
                (1, *strides, 1),
            )
            for i, j in offsets
        ],
        axis=-1,
    )


class Conv(nn.Module):
    features: int
    kernel_size: tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, channels, self.features))
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        y = patches(x, tuple(self.kernel_size), strides, self.padding) @ kernel.reshape(-1, self.features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y
