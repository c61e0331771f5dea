"""The protocol registry. To add one: write one file with a `PROTOCOL`, then add it to `PROTOCOLS` below."""

from normbench.config import ConfigError
from normbench.protocols import ghost, per_device, sgd, sync
from normbench.protocols.registry import DATA, BatchSplit, Protocol

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (sgd.PROTOCOL, ghost.PROTOCOL, per_device.PROTOCOL, sync.PROTOCOL)}
# The one-device protocol that the others vary: figures draw it first, and a data-parallel cell's devices each
# cost what its cell costs (`normbench.core.budget`).
BASELINE = sgd.PROTOCOL.name


def check_protocol(name: str) -> None:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown sweep.protocols {name!r}; valid: {', '.join(PROTOCOLS)}")


__all__ = ["BASELINE", "DATA", "PROTOCOLS", "BatchSplit", "Protocol", "check_protocol"]
