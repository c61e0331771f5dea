"""`batch`: Batch Normalization (Ioffe & Szegedy, 2015).

Train mode: mu_B and the biased sigma_B^2 over every axis but the channels of this run's batch,
x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps), y = gamma x_hat + beta (gamma = 1, beta = 0 at start), and
running = momentum * running + (1 - momentum) * batch statistic in `batch_stats`. Eval mode uses the running
statistics. The variance is the two-pass mean of squared deviations: the one-pass E[x^2] - E[x]^2 loses the
tiny variances of small-init layers to cancellation.

Over the whole batch it is Flax's BatchNorm, which the committed reference results were computed with; with
`stats.axis_name` set that is SyncBN: inside a shard_map over that mesh axis mu_B and sigma_B^2 are means over
every device's examples (two all-reduces per layer forward, two more backward), and the running statistics stay
equal on all devices. With `stats.group_size` (the ghost protocol) it is Ghost BatchNorm over groups of that size.
"""

import flax.linen as nn

from normbench.norms import ghost_batch
from normbench.norms.registry import NormSpec


def make(config, stats):
    if stats.group_size is not None:
        return ghost_batch.make(config, stats)

    def factory(train):
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=config.momentum,
            epsilon=config.epsilon,
            use_fast_variance=False,
            axis_name=stats.axis_name,
        )

    return factory


SPEC = NormSpec(
    name="batch",
    make=make,
    batch_dependent=True,
    running_stats=True,
    summary="BatchNorm over the batch (and spatial axes); running averages for eval",
    reduces_over="batch, spatial",
    options=("momentum", "epsilon"),
    scale_invariant=True,
)
