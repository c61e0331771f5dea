"""XLA options normbench adds to `XLA_FLAGS` before JAX starts its backend (which reads them once).

`--xla_cpu_experimental_ynn_fusion_type=-reduce`: jaxlib 0.9 and 0.10 hand reductions on the CPU to YNNPACK,
which sums over a non-minor axis slowly, a known regression (jax-ml/jax#37465, whose workaround this is).
BatchNorm's backward pass is such sums (over the batch of each run's [batch, features] activations): under
YNNPACK they were a quarter of the init-scale study's BN cell's kernel time, in XLA's own loops a small part
(`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+reduce normbench bench` measures it again). Dot products
stay with YNNPACK.

A user's own `--xla_cpu_experimental_ynn_fusion_type` in `XLA_FLAGS` wins (`=+reduce` restores XLA's default).
Other jaxlib versions are left alone: XLA aborts on a flag it does not know, and a later one may fix the
regression or drop the flag.
"""

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_JAXLIB = ((0, 9), (0, 11))  # the versions with the slow reductions and the flag, [from, to)


def jaxlib_version() -> tuple[int, ...] | None:
    # jaxlib's own version module, not importlib.metadata: importing that slows every command's start.
    try:
        from jaxlib.version import __version__
    except ImportError:
        return None
    return tuple(int(part) for part in __version__.split("+")[0].split(".") if part.isdigit())


def with_defaults(xla_flags: str, jaxlib: tuple[int, ...] | None) -> str:
    """`xla_flags` with normbench's options added where the user has not set them and this jaxlib takes them."""
    first, last = YNN_JAXLIB
    if jaxlib is None or not first <= jaxlib < last or YNN_FLAG in xla_flags:
        return xla_flags
    return f"{xla_flags} {YNN_FLAG}=-reduce".strip()


def set_defaults() -> None:
    os.environ["XLA_FLAGS"] = with_defaults(os.environ.get("XLA_FLAGS", ""), jaxlib_version())
