"""The norm registry. To add a variant: write one file with a `SPEC`, then add it to `NORMS` below."""

from types import MappingProxyType

from normbench.config import ConfigError, NormConfig
from normbench.errors import did_you_mean
from normbench.norms import batch, batch_renorm, evonorm, frn, ghost_batch, group, identity, instance, layer, power, rms
from normbench.norms.registry import WHOLE_BATCH, BatchStats, NormFactory, NormSpec
from normbench.norms.weight_std import with_weight_standardization

NORMS: dict[str, NormSpec] = {
    spec.name: spec
    for spec in (
        identity.SPEC,
        batch.SPEC,
        layer.SPEC,
        group.SPEC,
        instance.SPEC,
        rms.SPEC,
        ghost_batch.SPEC,
        batch_renorm.SPEC,
        frn.SPEC,
        evonorm.SPEC_B0,
        evonorm.SPEC_S0,
        power.SPEC,
        # Weight standardization composes with the activation norms its paper pairs it with.
        with_weight_standardization(batch.SPEC),
        with_weight_standardization(group.SPEC),
        with_weight_standardization(layer.SPEC),
    )
}
# The registry as every process has it once normbench is imported, before any `normbench.register_norm`: what a
# worker process knows without being told (`normbench.core.sweep.norm_addresses`).
BUILT_IN = MappingProxyType(dict(NORMS))


def check_norm(name: str, config: NormConfig, channels: tuple[int, ...]) -> None:
    """Reject a norm name or options when the config is resolved, before anything is traced."""
    if name not in NORMS:
        raise ConfigError(f"unknown norm {name!r}; valid norms: {', '.join(NORMS)}{did_you_mean(name, NORMS)}")
    for c in sorted(set(channels)):
        NORMS[name].check(config, c)


def get_norm(name: str) -> NormSpec:
    check_norm(name, None, ())
    return NORMS[name]


__all__ = ["BUILT_IN", "NORMS", "WHOLE_BATCH", "BatchStats", "NormFactory", "NormSpec", "check_norm", "get_norm"]
