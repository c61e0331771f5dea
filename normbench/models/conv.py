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

Why small batches take their input gradient from `unpatch` on a CPU (`patches_formed_once`, at per-run batches up to
`ONCE_MAX_BATCH`): autodiff's transpose of the patches is a sum of kh x kw copies of the patch gradient, each padded to
the whole input with interior padding, and XLA:CPU fuses that sum into every consumer that can take it (the norm's
backward reductions and the gradient of the layer below: five to seven of them), computing it in each. In the
small-batch study's CNN at batch 2 those fusions were half of a step (jax profiler). `unpatch` forms the same sums,
without interior padding, and `formed_once` has XLA compute them once. `benchmarks/conv_input_gradient.py` alternates
the two paths in one process (its table is in docs/performance.md): at batches 2 to 32 an epoch took 0.50-0.93 of
autodiff's time, at 64 and 128 1.02-1.04 (a hypothesis from the profile at 128: there XLA splits BN's reductions into
reduce-windows, which read the sum formed once already). The sums are autodiff's, but a reduction reading them as a
formed array rather than fused may add in another order: BN trained to the same bits at every batch, LayerNorm at 2
and 8 and GroupNorm at 8 did not, and the small-batch study was trained again with it. The limit is 16, though 32
gains as much: the committed scorecard trains its CNN test at 32 with every norm, and was not trained again.

Why an evaluation's patches are stacks (`patches_stacked`, read while tracing: `EVAL_PATCHES`): XLA:CPU leaves a
concatenate unfused when it joins more than 8 operands or runs along the minor axis, as `patches`' 9 channel blocks
do, so each of its 9 slices is a kernel that computes the layer below's norm and activation again, and the
concatenate copies what they wrote. Stacks of at most 3 along outer axes fuse: the norm and activation are computed
once, into the padded input, and the patches written in one pass. Their values are `patches`' values, and an
evaluation computes the same bits either way for every norm of every committed study with a CNN but one (the
scorecard's InstanceNorm: its losses by an ulp; docs/performance.md lists what was checked). A pass that trains
keeps `patches`: there the stacks moved the bits of a BN or GN step (BN's in the forward pass already, at the third
convolution, whose input's norm and ReLU are scalar code in the stacks' kernel and vector code in 3 of the slices'
9; a hypothesis for why that moves bits: LLVM contracts other multiplies and adds into FMAs in the one than in the
other), so using them in training means training the studies with a CNN again. `benchmarks/eval_patches.py` times
the two.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# The largest per-run batch whose convolutions take their input gradient from `unpatch` on a CPU (see above).
ONCE_MAX_BATCH = 16


def _offsets(x, kernel_size: tuple[int, int], strides: tuple[int, int], padding: str) -> list[list[jax.Array]]:
    """The padded NHWC `x` read at each kernel offset (i, j) with the strides: [i][j], each (N, H', W', C)."""
    pads = jax.lax.padtype_to_pads(x.shape[1:3], kernel_size, strides, padding)
    padded = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    out = [(size - k) // s + 1 for size, k, s in zip(padded.shape[1:3], kernel_size, strides)]

    def offset(i: int, j: int):
        end = (padded.shape[0], i + strides[0] * (out[0] - 1) + 1, j + strides[1] * (out[1] - 1) + 1, x.shape[3])
        return jax.lax.slice(padded, (0, i, j, 0), end, (1, *strides, 1))

    return [[offset(i, j) for j in range(kernel_size[1])] for i in range(kernel_size[0])]


def patches(x, kernel_size: tuple[int, int], strides: tuple[int, int], padding: str):
    """(N, H', W', kh * kw * C) patches of the NHWC `x`, listed offset-major, (kh, kw, in): the order of an HWIO
    kernel's rows."""
    return jnp.concatenate([piece for row in _offsets(x, kernel_size, strides, padding) for piece in row], axis=-1)


def patches_stacked(x, kernel_size: tuple[int, int], strides: tuple[int, int], padding: str):
    """`patches`, value for value, as stacks of slices that XLA:CPU fuses into one kernel (see above)."""
    rows = [jnp.stack(row, axis=3) for row in _offsets(x, kernel_size, strides, padding)]
    stacked = jnp.stack(rows, axis=3)  # (N, H', W', kh, kw, C)
    return stacked.reshape(*stacked.shape[:3], -1)


# The patches of a pass that does not train (see above); `benchmarks/eval_patches.py` sets it to `patches`.
EVAL_PATCHES = patches_stacked


def unpatch(g, x_shape, kernel_size: tuple[int, int], strides: tuple[int, int], padding: str):
    """The transpose of `patches` (col2im): the gradient of its NHWC input of shape `x_shape` from the patch gradient
    `g`. Each pixel sums the offsets that read it, in descending offset order: the order of autodiff's transpose of
    `patches`, whose other terms are zeros, so the sums are its sums bit for bit (but for the sign of a zero). The
    pixels of one residue modulo the strides are read by the same offsets, each at a shift: a sum of edge-padded
    copies of `g`'s pieces, where autodiff pads every piece to the whole input with interior padding."""
    n, height, width, channels = x_shape
    (kh, kw), (sh, sw) = kernel_size, strides
    pads = jax.lax.padtype_to_pads((height, width), kernel_size, strides, padding)
    rows, cols = -(-(height + sum(pads[0])) // sh), -(-(width + sum(pads[1])) // sw)  # per residue, rounded up
    out_h, out_w = g.shape[1:3]
    pieces = g.reshape(n, out_h, out_w, kh * kw, channels)

    def residue(a: int, b: int):
        total = jnp.zeros((n, rows, cols, channels), g.dtype)
        for k in reversed(range(kh * kw)):
            i, j = divmod(k, kw)
            if i % sh == a and j % sw == b:
                shift = [(0, 0), (i // sh, rows - out_h - i // sh), (j // sw, cols - out_w - j // sw), (0, 0)]
                total = total + jnp.pad(pieces[:, :, :, k], shift)
        return total

    # (n, rows, sh, cols, sw, c): residue (a, b) of padded pixel (r * sh + a, c * sw + b)
    grid = jnp.stack([jnp.stack([residue(a, b) for b in range(sw)], axis=3) for a in range(sh)], axis=2)
    padded = grid.reshape(n, rows * sh, cols * sw, channels)
    return padded[:, pads[0][0] : pads[0][0] + height, pads[1][0] : pads[1][0] + width]


def formed_once(x):
    """`x` times the identity over its last axis: `x` for finite values (NaN where a row holds an infinity). XLA
    fuses elementwise work into each of its consumers; a matrix product it does not, so its consumers read `x`
    formed once."""
    return jnp.einsum("...c,cd->...d", x, jnp.eye(x.shape[-1], dtype=x.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def patches_formed_once(x, kernel_size: tuple[int, int], strides: tuple[int, int], padding: str):
    """`patches`, whose input gradient is `unpatch`'s, formed once (`formed_once`)."""
    return patches(x, kernel_size, strides, padding)


def _patches_forward(x, kernel_size, strides, padding):
    return patches(x, kernel_size, strides, padding), x.shape


def _patches_backward(kernel_size, strides, padding, x_shape, g):
    return (formed_once(unpatch(g, x_shape, kernel_size, strides, padding)),)


patches_formed_once.defvjp(_patches_forward, _patches_backward)


def patches_for(x, train: bool):
    """The patches function for `x`, one run's NHWC input: `EVAL_PATCHES` in a pass that does not train, else
    `patches_formed_once` at small batches on a CPU."""
    if not train:
        return EVAL_PATCHES
    small = x.shape[0] <= ONCE_MAX_BATCH and jax.default_backend() == "cpu"
    return patches_formed_once if small else patches


class Conv(nn.Module):
    features: int
    kernel_size: tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    # The model's `train`: whether this pass trains, which chooses how the patches are built (see above).
    train: bool = True

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, channels, self.features))
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        form = patches_for(x, self.train)
        y = form(x, tuple(self.kernel_size), strides, self.padding) @ kernel.reshape(-1, self.features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y
