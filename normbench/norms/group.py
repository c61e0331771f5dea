"""`group`: Group Normalization (Wu & He, 2018).

Channels are split into G groups; each example is normalized over its spatial axes and the channels of one
group, y = gamma (x - mu_g) / sqrt(sigma_g^2 + eps) + beta with per-channel gamma, beta. Set `norm.num_groups`
or `norm.group_size`; with neither, G = 32 as in the paper.
"""

import flax.linen as nn

from normbench.config import ConfigError
from normbench.norms.registry import NormSpec

DEFAULT_GROUPS = 32


def check(config, channels, name: str = "group norm") -> None:
    """`check_groups` of the config's groups (`group_options`), refusing both fields set; `name` says whose."""
    if config.num_groups is not None and config.group_size is not None:
        raise ConfigError(f"{name} takes norm.num_groups or norm.group_size, not both")
    check_groups(name, channels=channels, **group_options(config))


def check_groups(name: str, num_groups, group_size, channels: int) -> None:
    """ConfigError unless exactly one of num_groups / group_size is set, positive, and it tiles `channels`."""
    if (num_groups is None) == (group_size is None):
        raise ConfigError(
            f"{name} takes norm.num_groups or norm.group_size, exactly one, got {num_groups} and {group_size}"
        )
    field, value = ("group_size", group_size) if group_size is not None else ("num_groups", num_groups)
    if value < 1:
        raise ConfigError(f"{name}: norm.{field} must be positive, got {value}")
    if group_size is not None and channels % group_size:
        raise ConfigError(
            f"{name}: norm.group_size={group_size} does not divide a layer of {channels} channels; "
            f"use a divisor of {channels}"
        )
    if num_groups is not None and channels % num_groups:
        raise ConfigError(
            f"{name}: {num_groups} groups do not divide a layer of {channels} channels; "
            f"set norm.num_groups to a divisor of {channels} (or norm.group_size)"
        )


def group_options(config) -> dict:
    """GroupNorm's `num_groups` / `group_size` arguments from the config: group_size where set, else num_groups,
    else 32 groups. Only None is unset: a 0 is the user's value, which `check_groups` refuses."""
    if config.group_size is not None:
        return {"num_groups": None, "group_size": config.group_size}
    return {"num_groups": DEFAULT_GROUPS if config.num_groups is None else config.num_groups, "group_size": None}


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
