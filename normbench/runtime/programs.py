"""A cell's single-device programs (its phases, `normbench.runtime.phases`) kept compiled, so that a repeated
run neither traces nor compiles them.

XLA's compilation cache (`normbench.runtime.cache`) is keyed by the traced program, so a hit still pays for tracing
and lowering, most of a warm run's wait before training. Here
the compiled program itself (its executable, serialized by `jax.experimental.serialize_executable`) is kept under
`cache_dir()/programs`, keyed by what it depends on: normbench's sources, the versions of jax, jaxlib, flax, optax
and numpy, JAX's settings and XLA's flags, the devices, the backend's version and the host CPU's instruction set
(the program is machine code), the config and cell, the class count and the arguments' shapes. That is complete
only for code normbench owns, so a cell whose norm or model is registered from elsewhere is traced and compiled
(XLA's cache permitting) every time. A loaded program is the executable that the first run compiled, so it
computes the same bits.

An executable that XLA's own cache loaded serializes without its code (running the copy fails with "Function ...
not found"), so a program is kept only when this process compiled it. An entry is its payload's sha256 followed by
the payload: one that does not match its checksum or does not load (a flipped bit, a torn or foreign file) is
discarded with a warning and compiled again, never used.

The same payload carries a compiled program to another process on this machine (`CompiledGrid.payload`,
`CompiledGrid.from_payload`): `normbench.runtime.processes` compiles a cell once and trains it in workers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pickle
import platform
import threading
from pathlib import Path

import jax
import numpy as np
from jax.experimental import serialize_executable

from normbench.runtime.cache import cache_dir, caching, keep

logger = logging.getLogger("normbench")


@functools.cache
def _source_digest() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The fields of the host's `/proc/cpuinfo`, as its last processor gives them (the same as its first's); none
    where there is no such file (not Linux)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}


@functools.cache
def _host_cpu() -> str:
    fields = cpuinfo()
    return fields.get("flags") or fields.get("Features") or platform.processor()  # x86, Arm, then what platform knows


def program_key(config, cell, specs: tuple, args) -> str | None:
    """The cache key of a cell's program, or None when it must not be cached: caching is off, or a function or
    class held by `specs` (the registry entries of the cell's norm and model) is not normbench's own code."""
    builders = [getattr(spec, f.name) for spec in specs for f in dataclasses.fields(spec)]
    if not caching() or any(
        not (getattr(b, "__module__", None) or "").startswith("normbench.") for b in builders if callable(b)
    ):
        return None
    import flax
    import jaxlib
    import optax

    parts = {
        "source": _source_digest(),
        "versions": [jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__, np.__version__],
        # less where the caches live, so that a moved cache still hits
        "jax_config": {
            k: v
            for k, v in jax.config.values.items()
            if isinstance(v, str | int | float | bool | None) and k != "jax_compilation_cache_dir"
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "devices": [d.device_kind for d in jax.devices()],
        # A kept program is machine code: for the backend's version and, on a CPU, the host's instruction set.
        "platform": [jax.devices()[0].client.platform_version, _host_cpu()],
        "config": dataclasses.asdict(config),
        "cell": repr(cell),
        "tree": str(jax.tree.structure(args)),
        # arrays by shape and type, Python numbers (the class count) by value: the trace bakes those in
        "leaves": [repr(a) if isinstance(a, int | float) else (a.shape, str(a.dtype)) for a in jax.tree.leaves(args)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


class KeptGrid:
    """A program kept under `key` (None: not kept): `kept` is the compiled program where one was kept, else
    `lower(grid, args)` lowers `grid(*args)` with `jax.jit`. Like a `jax.stages.Lowered`, its `compile()`
    returns the program, called like `grid`, and keeps it."""

    def __init__(self, key: str | None):
        self.path = None if key is None else cache_dir() / "programs" / f"{key}.exe"
        self.kept = _load(self.path)

    def lower(self, grid, args: tuple, donate: tuple[int, ...] = (), options: dict | None = None) -> None:
        """The arguments numbered in `donate` are donated: the program may write its outputs over their buffers,
        so the caller must not use them again. `options`: XLA's compiler options for it (None: its defaults)."""
        leaves, in_tree = jax.tree.flatten(args)
        counts = [len(jax.tree.leaves(arg)) for arg in args]
        starts = np.cumsum([0, *counts])
        donated = tuple(i for a in donate for i in range(starts[a], starts[a] + counts[a]))
        out_tree = []

        def flat(*leaves):  # a kept program takes and returns flat lists: its pytrees are pickled beside it
            flat_out, tree = jax.tree.flatten(grid(*jax.tree.unflatten(in_tree, leaves)))
            out_tree.append(tree)
            return flat_out

        self.lowered = jax.jit(flat, donate_argnums=donated).lower(*leaves)
        self.out_tree = out_tree[0]
        self.options = options

    def compile(self) -> CompiledGrid:
        if self.kept is not None:
            return self.kept
        hits = _xla_cache_hits()
        compiled = self.lowered.compile(self.options)
        # an executable that XLA's own cache loaded serializes without its code
        program = CompiledGrid(compiled, self.out_tree, portable=_xla_cache_hits() == hits)
        payload = program.payload() if self.path is not None else None
        if payload is not None:
            keep(self.path, hashlib.sha256(payload).digest() + payload)
        return program


class CompiledGrid:
    """A compiled `KeptGrid`, called like its grid; anything else (`memory_analysis()`, `as_text()`) is the
    `jax.stages.Compiled`'s."""

    def __init__(self, compiled, out_tree, payload: bytes | None = None, portable: bool = True):
        self.compiled, self.out_tree = compiled, out_tree
        self.portable = portable  # whether `payload()` can give the program's code
        self._payload = payload

    @classmethod
    def from_payload(cls, payload: bytes) -> CompiledGrid:
        """The program that `payload()` gave, loaded into this process."""
        executable, in_tree, flat_out_tree, out_tree = pickle.loads(payload)
        return cls(serialize_executable.deserialize_and_load(executable, in_tree, flat_out_tree), out_tree, payload)

    def payload(self) -> bytes | None:
        """The program as bytes that `from_payload` loads, in this process or another one on this machine; None
        where it cannot be serialized (a backend or program that JAX cannot serialize, or one that XLA's own cache
        loaded)."""
        if self._payload is None and self.portable:
            try:
                self._payload = pickle.dumps((*serialize_executable.serialize(self.compiled), self.out_tree))
            except (ValueError, NotImplementedError) as e:
                logger.debug(f"cannot serialize the program: {e}")
                self.portable = False
        return self._payload

    def __call__(self, *args):
        return jax.tree.unflatten(self.out_tree, self.compiled(*jax.tree.leaves(args)))

    def output_shapes(self):
        """What a call returns, as `jax.eval_shape` would give it."""
        return jax.tree.unflatten(self.out_tree, [jax.ShapeDtypeStruct(o.shape, o.dtype) for o in self.out_info])

    def __getattr__(self, name):
        return getattr(self.compiled, name)


_hits = threading.local()


def _count_hit(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _hits.count = getattr(_hits, "count", 0) + 1


jax.monitoring.register_event_listener(_count_hit)


def _xla_cache_hits() -> int:
    """How many programs this thread has loaded from XLA's cache."""
    return getattr(_hits, "count", 0)


def _load(path: Path | None) -> CompiledGrid | None:
    if path is None or not path.exists():
        return None
    try:
        entry = path.read_bytes()
        digest, payload = entry[:32], entry[32:]
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("its checksum does not match")
        return CompiledGrid.from_payload(payload)
    except Exception as e:  # noqa: BLE001 -- whatever is wrong with an entry, compiling again is right
        _discard(path, e)
        return None


def _discard(path: Path, error: Exception) -> None:
    reason = " ".join(str(error).split())[:200] or type(error).__name__  # one line, however long the error
    logger.warning(f"discarding the bad program cache entry {path} ({reason}); compiling the program again")
    path.unlink(missing_ok=True)
