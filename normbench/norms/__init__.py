"""The norm registry. To add a variant: write one file with a `SPEC`, then add it to `NORMS` below."""

from normbench.norms import batch, group, identity, layer
from normbench.norms.registry import NormFactory, NormSpec, check_norm

NORMS: dict[str, NormSpec] = {spec.name: spec for spec in (identity.SPEC, batch.SPEC, layer.SPEC, group.SPEC)}


def get_norm(name: str) -> NormSpec:
    check_norm(name, None, ())
    return NORMS[name]


__all__ = ["NORMS", "NormFactory", "NormSpec", "check_norm", "get_norm"]
