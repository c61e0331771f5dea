"""What a batch protocol is to the rest of normbench: a `Protocol` in the `PROTOCOLS` dict.

A protocol says how a run's batch is formed: how many examples one SGD step takes, over how many devices they
are split, which examples each of its norms' batch statistics see (its value axis, the `ghost_size` column of
metrics.csv) and how the norm is built to see them. Norms only declare whether they compute batch statistics
(`NormSpec.batch_dependent`); every batch-dependent norm honours any `BatchStats` a protocol hands it
(`normbench.conformance` checks that), so a new norm gets every protocol and a new protocol every norm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax

from normbench.config import Config
from normbench.norms.registry import WHOLE_BATCH, BatchStats

DATA = "data"  # the mesh axis a data-parallel batch is split over


class BatchSplit(NamedTuple):
    """How a training step's batch is spread over devices; the default, one device, changes nothing."""

    axis: str | None = None  # the mesh axis the batch is split over
    devices: int = 1
    sync: bool = False  # BatchNorm's statistics are averaged over the axis (SyncBN)

    def local(self, indices):
        """This device's share of one batch's example indices."""
        if self.axis is None:
            return indices
        size = indices.shape[0] // self.devices
        return jax.lax.dynamic_slice_in_dim(indices, jax.lax.axis_index(self.axis) * size, size)

    def per_device(self, batch_stats):
        """Running statistics that each device will update from its own examples: shard_map must know that
        they differ between devices, or the training scan's carry changes type after one step."""
        if self.axis is None or self.sync:
            return batch_stats
        return jax.lax.pcast(batch_stats, (self.axis,), to="varying")

    def averaged(self, batch_stats):
        """The devices' running statistics, averaged over the devices (one all-reduce)."""
        if self.axis is None or self.sync:
            return batch_stats
        return jax.lax.pmean(batch_stats, self.axis)


def _unchecked(config: Config) -> None:
    pass


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    # Examples per batch statistic for a cell whose `batch_size` is `batch`: one value per run, vmapped (the
    # `ghost_size` column). (config, batch) -> sizes.
    stat_sizes: Callable[[Config, int], tuple[int, ...]]
    # The cells' batch sizes from `sweep.batch_sizes`.
    cell_batches: Callable[[tuple[int, ...]], tuple[int, ...]] = lambda sizes: sizes
    # Only norms with batch statistics get cells: any other norm would repeat the same runs.
    batch_dependent_only: bool = False
    # The split of every SGD batch over devices; a cell's SGD batch is its `batch_size` times the devices.
    split: Callable[[Config], BatchSplit] = lambda config: BatchSplit()
    # How a run's norm forms its statistics, given that run's stat size (a traced int).
    batch_stats: Callable[[Any], BatchStats] = lambda size: WHOLE_BATCH
    # Raises ConfigError when the sweep cannot run under this protocol.
    check: Callable[[Config], None] = _unchecked
    # True when a cell's runs differ in the examples per statistic: its `ghost_size` column is an axis of its own.
    statistic_axis: bool = False
    # Where a batch statistic is formed, in words for a figure's legend.
    statistics: str = "whole batch"
