"""What a norm is to the rest of normbench: a `NormSpec` in the `NORMS` dict.

Every norm follows one call convention, so models never branch on names: `spec.make(norm_config, stats)`
returns a factory, `factory(train)` returns a fresh Flax module, and that module is applied as `module(x)` with
channels on the last axis and the examples of one run on axis 0. `stats` (a `BatchStats`) is how the sweep's
protocol wants batch statistics formed: over ghost groups, or averaged over a device axis (SyncBN). Norms that
are not batch-dependent ignore it; batch-dependent ones take their moments from `normbench.norms.moments`,
which honours both. Under a vmapped sweep each run sees only its own axis 0: no norm names a vmap axis, so
batch statistics never mix runs; the one device axis a norm may name is `stats.axis_name`. The NormConfig's
`epsilon` and `momentum` may be traced (vmapped value axes), so norms use them in arithmetic only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn

from normbench.config import NormConfig

NormFactory = Callable[[bool], nn.Module]


@dataclass(frozen=True)
class BatchStats:
    """How a batch-dependent norm forms its batch statistics; the sweep's protocol chooses it."""

    # Examples per statistic (ghost batches); None: the run's whole batch. May be a traced int32 scalar.
    group_size: Any = None
    # A device-mesh axis whose devices' statistics are averaged (SyncBN); None: this device's examples only.
    axis_name: str | None = None


WHOLE_BATCH = BatchStats()

# The NormConfig option of inference example weighting (Summers & Dinneen, 2020): a norm whose eval mode normalizes
# with a running mean and variance can mix each example's own moments into them (`normbench.norms.ghost_batch.
# example_weighted`); listing it in `NormSpec.options` declares that its eval mode does.
EXAMPLE_WEIGHT = "inference_example_weight"


@dataclass(frozen=True)
class NormSpec:
    """A norm and the facts about it that the rest of normbench uses instead of checking names."""

    name: str
    make: Callable[[NormConfig, BatchStats], NormFactory]
    # True when one example's output depends on the other examples of its batch (train mode). Such a norm must
    # honour both fields of `BatchStats`; the conformance checks hold it to that.
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
    # True when its backward pass moves a running statistic (PowerNorm's nu): its custom VJP returns the step as
    # the gradient with respect to that `batch_stats` variable, and the trainer adds the loss's gradient with
    # respect to batch_stats to them after each step. False leaves them out of the gradient.
    backward_stats: bool = False
    # Raises ConfigError when the options cannot apply to a layer of this many channels.
    check: Callable[[NormConfig, int], None] = lambda config, channels: None
    # Raises ConfigError when it cannot form its statistics over a training batch of this many examples.
    check_batch: Callable[[NormConfig, int], None] = lambda config, batch: None

    @property
    def weights_examples(self) -> bool:
        """Whether its eval mode honours `norm.inference_example_weight`, as its options declare; the conformance
        checks hold a norm that declares it to the paper's formula, and one that does not to ignoring it."""
        return EXAMPLE_WEIGHT in self.options
