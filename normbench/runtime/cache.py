"""normbench's on-disk caches (decoded data, traced and compiled programs), under `$NORMBENCH_CACHE` or
`~/.cache/normbench`. They only save time: deleting the directory changes no result."""

import contextlib
import os
import tempfile
from pathlib import Path

# Read once, at import: os.umask can only be read by setting it, which would race with other threads.
_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir() -> Path:
    return Path(os.environ.get("NORMBENCH_CACHE") or Path.home() / ".cache" / "normbench")


def keep(path: Path, data: bytes) -> None:
    """Write a cache entry atomically, so a concurrent or interrupted run never reads half of one. A failure
    (a read-only home, a full disk) only means the entry is not kept: later runs redo its work, and an orphaned
    temporary file is only a cache's litter."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide a shared cache's entries from other users
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def enable_compilation_cache() -> None:
    """Keep XLA's compiled programs across processes, so a repeated study skips compilation: a sweep's whole-grid
    programs (`normbench.core.sweep.compile_cell`; the phases of a cell on one device are kept compiled by
    `normbench.runtime.programs`, which keeps nothing that XLA's cache loaded).

    Off when `NORMBENCH_COMPILATION_CACHE=0`; an explicit `JAX_COMPILATION_CACHE_DIR` is left as the user set it.
    """
    import jax

    if not caching() or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    # Our programs compile in seconds and are small on disk: cache every one.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def caching() -> bool:
    """Whether compiled and traced programs are kept: `NORMBENCH_COMPILATION_CACHE=0` turns both off."""
    return os.environ.get("NORMBENCH_COMPILATION_CACHE", "1") != "0"
