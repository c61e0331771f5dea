"""`sync`: data parallel as `per_device`, but a norm's batch statistics are averaged over all the devices
(SyncBN: one collective per statistic and layer), so they see the whole SGD batch."""

from normbench.norms.registry import BatchStats
from normbench.protocols.registry import DATA, BatchSplit, Protocol

PROTOCOL = Protocol(
    name="sync",
    summary="data parallel over train.data_parallel devices; batch statistics synchronized over all of them",
    stat_sizes=lambda config, batch: (batch * config.train.data_parallel,),
    batch_dependent_only=True,
    split=lambda config: BatchSplit(DATA, config.train.data_parallel, sync=True),
    batch_stats=lambda size: BatchStats(axis_name=DATA),
    statistics="synchronized",
)
