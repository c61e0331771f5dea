"""`per_device`: each SGD batch is split over `train.data_parallel` devices (`sweep.batch_sizes` is the batch
per device) and the gradients are averaged across them; each device's norms see only its own examples, the GN
paper's "images per GPU", with no communication for the statistics (`normbench.runtime.parallel`)."""

from normbench.protocols.registry import DATA, BatchSplit, Protocol

PROTOCOL = Protocol(
    name="per_device",
    summary="data parallel over train.data_parallel devices; batch statistics per device",
    stat_sizes=lambda config, batch: (batch,),
    split=lambda config: BatchSplit(DATA, config.train.data_parallel),
    statistics="per device",
)
