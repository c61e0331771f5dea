"""`group`: Group Normalization (Wu & He, 2018).

Channels are split into G groups; each example is normalized over its spatial axes and the channels of one
group, y = gamma (x - mu_g) / sqrt(sigma_g^2 + eps) + beta with per-channel gamma, beta. Set `norm.num_groups`
or `norm.group_size`; with neither, G = 32 as in the paper.
"""

import flax.linen as nn

from normbench.config import ConfigError
from normbench.norms.registry import NormSpec

DEFAULT_GROUPS = 32


def check(config, channels):
    if config.num_groups is not None and config.group_size is not None:
        raise ConfigError("group norm takes norm.num_groups or norm.group_size, not both")
    check_groups(
        "group norm", config.num_groups or (None if config.group_size else DEFAULT_GROUPS), config.group_size, channels
    )


def check_groups(name: str, num_groups, group_size, channels: int) -> None:
    """ConfigError unless exactly one of num_groups / group_size is set and it tiles `channels`."""
    if (num_groups is None) == (group_size is None):
        raise ConfigError(
            f"{name} takes norm.num_groups or norm.group_size, exactly one, got {num_groups} and {group_size}"
        )
    if group_size is not None:
        if group_size < 1 or channels % group_size:
            raise ConfigError(
                f"{name}: norm.group_size={group_size} does not divide a layer of {channels} "
                f"channels; use a divisor of {channels}"
            )
    elif num_groups < 1 or channels % num_groups:
        raise ConfigError(
            f"{name}: {num_groups} groups do not divide a layer of {channels} channels; "
            f"set norm.num_groups to a divisor of {channels} (or norm.group_size)"
        )


def group_options(config) -> dict:
    """GroupNorm's `num_groups` / `group_size` arguments from the config: group_size wins, else 32 groups."""
    if config.group_size:
        return {"num_groups": None, "group_size": config.group_size}
    return {"num_groups": config.num_groups or DEFAULT_GROUPS, "group_size": None}


def make(config, stats):
    def factory(train):
        return nn.GroupNorm(
            **group_options(config),
            epsilon=config.epsilon,
            use_fast_variance=False,
        )

    return factory


SPEC = NormSpec(
    name="group",
    make=make,
    batch_dependent=False,
    running_stats=False,
    summary="GroupNorm over channel groups (and spatial axes) of each example",
    reduces_over="spatial, channel group (per example)",
    options=("num_groups", "group_size", "epsilon"),
    scale_invariant=True,
    check=check,
)
