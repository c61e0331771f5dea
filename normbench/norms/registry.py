"""What a norm is to the rest of normbench: a `NormSpec` in the `NORMS` dict.

Every norm follows one call convention, so models never branch on names: `spec.make(norm_config)` returns a
factory, `factory(train)` returns a fresh Flax module, and that module is applied as `module(x, mask=None)`
with channels on the last axis and the examples of one run on axis 0; `mask` (broadcastable to x) marks the
real examples of a padded batch, and norms with batch statistics must leave the others out of them. Under a
vmapped sweep each run sees only its own axis 0: no norm names a vmap axis, so batch statistics never mix runs.
The one device axis a norm may name is the data-parallel batch axis, in its `make_synced` form (SyncBN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn

from normbench.config import ConfigError, NormConfig

NormFactory = Callable[[bool], nn.Module]


@dataclass(frozen=True)
class BatchStats:
    """How a batch-dependent norm forms its batch statistics; the sweep's protocol chooses it."""

    group_size: Any = None  # examples per statistic (ghost batches); None: the run's whole batch. May be traced.
    axis_name: str | None = None  # a device-mesh axis whose devices' statistics are averaged (SyncBN)


WHOLE_BATCH = BatchStats()


@dataclass(frozen=True)
class NormSpec:
    """A norm and the facts about it that the rest of normbench uses instead of checking names."""

    name: str
    make: Callable[[NormConfig], NormFactory]
    # True when one example's output depends on the other examples of its batch (train mode).
    batch_dependent: bool
    # True when the norm keeps running statistics in the `batch_stats` collection for eval mode.
    running_stats: bool
    summary: str
    # The axes its statistics reduce over, in words (e.g. "batch, spatial").
    reduces_over: str = "-"
    # The NormConfig fields it reads; `normbench list norms` shows them.
    options: tuple[str, ...] = ()
    # True when the layer applies its own nonlinearity (FRN's TLU, EvoNorm): models then add none after it.
    fuses_activation: bool = False
    # True when its output does not change if the preceding layer's weights are scaled by a positive factor.
    scale_invariant: bool = False
    # True for `<norm>+ws`: the kernels feeding the norm are weight-standardized (normbench/norms/weight_std.py).
    standardizes_weights: bool = False
    # Raises ConfigError when the options cannot apply to a layer of this many channels.
    check: Callable[[NormConfig, int], None] = lambda config, channels: None
    # For batch-dependent norms: (config, group_size) -> factory of the norm with its batch statistics taken
    # over groups of `group_size` examples (ghost batches); group_size may be traced. Used by the ghost protocol.
    make_grouped: Callable[[NormConfig, Any], NormFactory] | None = None
    # For batch-dependent norms: (config, axis_name) -> factory of the norm with its batch statistics averaged
    # over the devices of the mesh axis `axis_name` (SyncBN). Used by the `sync` protocol, inside shard_map.
    make_synced: Callable[[NormConfig, str], NormFactory] | None = None
