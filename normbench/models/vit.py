"""`vit`: a small Vision Transformer (Dosovitskiy et al., 2021) on patches of MNIST digits.

The image is cut into `patch_size` x `patch_size` patches (a 28x28 digit with patch 7: 16 tokens of 49 pixels),
each embedded by one Dense layer, plus a learned position embedding. Then `depth` blocks, each multi-head
self-attention (`heads` heads) and an MLP (width -> mlp_ratio x width -> width, the model's activation between),
each with a residual; then the mean over the tokens (no class token) and a Dense classifier. No dropout.

Norm placement (`model.norm_placement`, a static axis: it changes the graph):
- `pre` (Xiong et al., 2020): x + Attn(Norm(x)), then x + MLP(Norm(x)), and a final Norm before the pooling;
- `post` (Vaswani et al., 2017): Norm(x + Attn(x)), then Norm(x + MLP(x)).

Norms act on the (batch, tokens, channels) activations. A batch-dependent norm sees the tokens as spatial
positions, so BatchNorm's statistics are over batch x tokens (B x 16 values per channel, Shen et al.'s BN in a
Transformer; `normbench.models.norm_positions` gives 16 per layer) and ghost groups count examples. Every other
norm sees each token as an example: LayerNorm and RMSNorm normalize each token over its channels, as in every
Transformer, and PowerNorm's running statistic is over batch x tokens. Norms whose statistics are over an
example's spatial positions (instance, FRN) find none in a token and degenerate (instance outputs its beta). A
norm that fuses its activation (FRN, EvoNorm) replaces the MLP's. `<norm>+ws` is refused: a norm's input here is
a residual sum, not one kernel's output.
"""

import typing
from collections.abc import Callable

import flax.linen as nn

from normbench.config import ConfigError, Placement
from normbench.models.probes import record
from normbench.norms import NormFactory


class ViT(nn.Module):
    widths: tuple[int, ...]  # the width of every norm, (width,) per norm: only its length and value are read
    num_classes: int
    norm: NormFactory
    activation: Callable
    kernel_init: Callable
    standardize_weights: bool = False
    patch_size: int = 7
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    norm_placement: str = "pre"
    # The norm's NormSpec.batch_dependent: whether it sees the tokens as positions (True) or as examples.
    batch_dependent_norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        if self.standardize_weights:
            raise ConfigError(f"vit takes no +ws norm: {RESIDUAL_INPUTS}")
        width, p = self.widths[0], self.patch_size
        b, h, w, c = x.shape
        if h % p or w % p:
            raise ConfigError(f"vit: model.patch_size {p} does not divide the {h}x{w} images")
        tokens = (h // p) * (w // p)
        x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, tokens, p * p * c)
        x = nn.Dense(width, kernel_init=self.kernel_init)(x)
        x = x + self.param("position", nn.initializers.normal(0.02), (1, tokens, width)).astype(x.dtype)
        layers = iter(range(len(self.widths)))

        def norm(v):
            if self.batch_dependent_norm:
                out = self.norm(train)(v)
            else:  # each token its own example
                out = self.norm(train)(v.reshape(-1, v.shape[-1])).reshape(v.shape)
            return record(self, next(layers), v, out)

        def attention(v):
            return nn.MultiHeadDotProductAttention(self.heads, kernel_init=self.kernel_init, deterministic=True)(v)

        def mlp(v):
            v = self.activation(nn.Dense(self.mlp_ratio * width, kernel_init=self.kernel_init)(v))
            return nn.Dense(width, kernel_init=self.kernel_init)(v)

        for _ in range(self.depth):
            for block in (attention, mlp):
                x = x + block(norm(x)) if self.norm_placement == "pre" else norm(x + block(x))
        if self.norm_placement == "pre":
            x = norm(x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x.mean(axis=1))


PLACEMENTS = typing.get_args(Placement)
RESIDUAL_INPUTS = "a norm's input is a residual sum, not one kernel's output, whose weights it could standardize"


# A run traces its blocks one by one in Python and lists two norm widths per block when it checks them: a depth is a
# loop, bounded where the deepest Transformers trained end (DeepNet, Wang et al. 2022: 1,000 layers), not at int32.
MAX_DEPTH = 1000


def norm_count(config) -> int:
    """Norms in the path: two per block, and the final one of pre-norm."""
    return 2 * config.depth + (config.norm_placement == "pre")


def check(config) -> None:
    if config.norm_placement not in PLACEMENTS:
        raise ConfigError(f"unknown model.norm_placement {config.norm_placement!r}; valid: {', '.join(PLACEMENTS)}")
    for key in ("patch_size", "width", "depth", "heads", "mlp_ratio"):
        if getattr(config, key) < 1:
            raise ConfigError(f"model.{key} must be at least 1, got {getattr(config, key)}")
        if getattr(config, key) >= 2**31:  # as every count of a run: a size past int64 failed in a reshape
            raise ConfigError(f"model.{key} must be below 2**31, got {getattr(config, key)}")
    if config.depth > MAX_DEPTH:
        raise ConfigError(f"model.depth must be at most {MAX_DEPTH:,} blocks, got {config.depth}")
    if config.width % config.heads:
        raise ConfigError(f"vit: model.heads {config.heads} does not divide model.width {config.width}")
