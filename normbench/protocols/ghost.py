"""`ghost`: every run's SGD batch is the largest of `sweep.batch_sizes`, while batch-dependent norms compute
their statistics over ghost groups of each of the sizes (Hoffer et al., 2017; Wu & Johnson, 2021). The group
size is a traced value, so all sizes train in one program. A batch-independent norm (LayerNorm, GroupNorm) trains
once, at the SGD batch: the reference the batch-dependent norms' sizes are read against."""

from normbench.config import Config, ConfigError
from normbench.norms.registry import BatchStats
from normbench.protocols.registry import Protocol


def check(config: Config) -> None:
    sizes = config.sweep.batch_sizes
    if any(max(sizes) % b for b in sizes):
        raise ConfigError(
            f"the ghost protocol splits the SGD batch of {max(sizes)} into groups of each of sweep.batch_sizes, "
            f"so each must divide it; got {sizes}"
        )


PROTOCOL = Protocol(
    name="ghost",
    summary="SGD batch = the largest size; batch statistics over ghost groups of each size, vmapped",
    stat_sizes=lambda config, batch: config.sweep.batch_sizes,
    cell_batches=lambda sizes: (max(sizes),),
    batch_stats=lambda size: BatchStats(group_size=size),
    check=check,
    statistic_axis=True,
    statistics="ghost groups",
)
