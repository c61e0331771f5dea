"""`batch`: Batch Normalization (Ioffe & Szegedy, 2015).

Train mode: mu_B and the biased sigma_B^2 over every axis but the channels of this run's batch,
x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps), y = gamma x_hat + beta (gamma = 1, beta = 0 at start), and
running = momentum * running + (1 - momentum) * batch statistic in `batch_stats`, from mean 0 and variance
`norm.running_var_init` (1, Flax's; the textbook starts at 0). The running variance moves toward sigma_B^2 (Flax,
the textbook) or, with `norm.unbiased_running_var`, toward n / (n - 1) sigma_B^2 (PyTorch), n the values per
statistic. Eval mode uses the running statistics (with `norm.inference_example_weight`, mixed with each example's
own: `normbench.norms.ghost_batch.example_weighted`). The variance is the two-pass mean of squared deviations: the
one-pass E[x^2] - E[x]^2 loses the tiny variances of small-init layers to cancellation.

With the defaults it is Flax's `nn.BatchNorm(use_fast_variance=False)` up to float rounding (the committed
reference results were computed with that; `tests/test_norms.py` holds them equal), and it keeps its name, so
parameters sit under `BatchNorm_0` as before. With `stats.axis_name` set it is SyncBN: inside a shard_map over
that mesh axis mu_B and sigma_B^2 are means over every device's examples (two all-reduces per layer forward, two
more backward), and the running statistics stay equal on all devices. With `stats.group_size` (the ghost
protocol) it is Ghost BatchNorm over groups of that size.
"""

from normbench.norms import ghost_batch
from normbench.norms.registry import EXAMPLE_WEIGHT, NormSpec


class BatchNorm(ghost_batch.GhostBatchNorm):
    """GhostBatchNorm over the whole batch (group_size None), named as Flax's BatchNorm in params."""


def make(config, stats):
    cls = BatchNorm if stats.group_size is None else ghost_batch.GhostBatchNorm
    return lambda train: ghost_batch.module(cls, stats.group_size, train, config, stats)


SPEC = NormSpec(
    name="batch",
    make=make,
    batch_dependent=True,
    running_stats=True,
    summary="BatchNorm over the batch (and spatial axes); running averages for eval",
    reduces_over="batch, spatial",
    options=(*ghost_batch.RUNNING_OPTIONS, EXAMPLE_WEIGHT),
    scale_invariant=True,
    check=ghost_batch.check_example_weight,
)
