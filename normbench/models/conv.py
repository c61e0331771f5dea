"""`Conv`: a 2-D convolution computed as patches times a matrix (im2col), a drop-in for `flax.linen.Conv` with the
same parameters (`kernel` (kh, kw, in, out), `bias`) and the same Flax name, so parameter trees, counts and
`scale_kernels` see no difference.

Why not `nn.Conv`: a sweep vmaps every run's own kernel, which XLA lowers to a grouped convolution, and XLA's CPU
backend runs those 5-6x slower than the batched matrix product that the patches give (a vmapped 3-block CNN,
12 runs, batches of 32 and 128, measured side by side); it also compiles in half the time.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


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
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else self.strides
        patches = jax.lax.conv_general_dilated_patches(
            x, self.kernel_size, strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        # A patch lists its values channel-major, (in, kh, kw), so the kernel's rows are put in that order.
        matrix = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, self.features)
        y = patches @ matrix
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y
