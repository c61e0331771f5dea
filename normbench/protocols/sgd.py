"""`sgd`: the SGD batch is also BatchNorm's batch, one compiled program per size in `sweep.batch_sizes` (the
Group Normalization paper's "images per GPU" on a single device)."""

from normbench.protocols.registry import Protocol

PROTOCOL = Protocol(
    name="sgd",
    summary="one program per batch size; batch statistics over the whole SGD batch",
    stat_sizes=lambda config, batch: (batch,),
)
