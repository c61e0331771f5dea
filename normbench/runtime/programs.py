"""A cell's single-device programs (its phases, `normbench.runtime.phases`) through `jax.export`, so that a
repeated run skips tracing them.

XLA's compilation cache (`normbench.runtime.cache`) is keyed by the traced program, so a hit still pays for the trace:
about a second for a BatchNorm cell of the init-scale study, most of a warm run's wait before training. Here the
traced program itself (its StableHLO, serialized by `jax.export`) is kept under `cache_dir()/programs`, keyed by
what the trace depends on: normbench's sources, the versions of jax, jaxlib, flax, optax and numpy, JAX's
settings and XLA's flags, the devices, the config and cell, the class count and the arguments' shapes. That is
complete only for code normbench owns, so a cell whose norm or model is registered from elsewhere is traced every
time. Every single-device program goes through the exported form, cached or not, so that a loaded program and a
freshly traced one compile the same StableHLO and compute the same bits.

An entry is its payload's sha256 followed by the payload: one that does not match its checksum, load or lower (a
flipped bit, a torn or foreign file) is discarded with a warning and traced again, never used.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import jax
import numpy as np

from normbench.runtime.cache import cache_dir, caching, keep

logger = logging.getLogger("normbench")


@functools.cache
def _source_digest() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


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
        "config": dataclasses.asdict(config),
        "cell": repr(cell),
        "tree": str(jax.tree.structure(args)),
        # arrays by shape and type, Python numbers (the class count) by value: the trace bakes those in
        "leaves": [repr(a) if isinstance(a, int | float) else (a.shape, str(a.dtype)) for a in jax.tree.leaves(args)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


class ExportedGrid:
    """`grid(*args)` traced once through `jax.export` (or loaded from the cache under `key`) and lowered with
    `jax.jit`. Like a `jax.stages.Lowered`, its `compile()` returns the program, called like `grid`. The
    arguments numbered in `donate` are donated: the program may write its outputs over their buffers, so the
    caller must not use them again."""

    def __init__(self, grid, key: str | None, args: tuple, donate: tuple[int, ...] = ()):
        leaves, in_tree = jax.tree.flatten(args)
        counts = [len(jax.tree.leaves(arg)) for arg in args]
        starts = np.cumsum([0, *counts])
        donated = tuple(i for a in donate for i in range(starts[a], starts[a] + counts[a]))
        call = functools.partial(jax.jit, donate_argnums=donated)
        path = None if key is None else cache_dir() / "programs" / f"{key}.pkl"
        loaded = _load(path)
        if loaded is not None:
            try:
                self.lowered, self.out_tree = call(loaded[0].call).lower(*leaves), loaded[1]
                return
            except Exception as e:  # noqa: BLE001 -- a sound file holding a broken program is a bad entry too
                _discard(path, e)
        out_tree = []

        def flat(*leaves):  # jax.export serializes flat signatures: no pytree nodes to register
            flat_out, tree = jax.tree.flatten(grid(*jax.tree.unflatten(in_tree, leaves)))
            out_tree.append(tree)
            return flat_out

        exported = jax.export.export(jax.jit(flat))(*leaves)
        _save(path, (exported, out_tree[0]))
        self.lowered, self.out_tree = call(exported.call).lower(*leaves), out_tree[0]

    def compile(self) -> CompiledGrid:
        return CompiledGrid(self.lowered.compile(), self.out_tree)


class CompiledGrid:
    """A compiled `ExportedGrid`, called like its grid; anything else (`memory_analysis()`, `as_text()`) is the
    `jax.stages.Compiled`'s."""

    def __init__(self, compiled, out_tree):
        self.compiled, self.out_tree = compiled, out_tree

    def __call__(self, *args):
        return jax.tree.unflatten(self.out_tree, self.compiled(*jax.tree.leaves(args)))

    def __getattr__(self, name):
        return getattr(self.compiled, name)


def _load(path: Path | None):
    if path is None or not path.exists():
        return None
    try:
        entry = path.read_bytes()
        digest, payload = entry[:32], entry[32:]
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("its checksum does not match")
        serialized, out_tree = pickle.loads(payload)
        return jax.export.deserialize(serialized), out_tree
    except Exception as e:  # noqa: BLE001 -- whatever is wrong with an entry, tracing again is right
        _discard(path, e)
        return None


def _discard(path: Path, error: Exception) -> None:
    reason = " ".join(str(error).split())[:200] or type(error).__name__  # one line, however long the error
    logger.warning(f"discarding the bad program cache entry {path} ({reason}); tracing the program again")
    path.unlink(missing_ok=True)


def _save(path: Path | None, loaded) -> None:
    if path is not None:
        exported, out_tree = loaded
        payload = pickle.dumps((exported.serialize(), out_tree))
        keep(path, hashlib.sha256(payload).digest() + payload)
