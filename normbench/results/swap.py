"""Replacing a directory by another as one step that a kill cannot split.

The new directory is built beside the old one, at `<out>.normbench-new` (same parent, so same filesystem), and
the two are swapped. On Linux (glibc >= 2.28, a filesystem that supports it: ext4, xfs, btrfs, tmpfs, ...) one
`renameat2(..., RENAME_EXCHANGE)` swaps them, so `<out>` is at every instant wholly the old directory or wholly
the new one; the old one, now at `<out>.normbench-new`, is then removed.

Elsewhere (macOS, NFS and other filesystems without the exchange) two renames do it: `<out>` to
`<out>.normbench-old`, then `<out>.normbench-new` to `<out>`. Killed between the two, `<out>` is missing for a
moment; `settle`, which every normbench command that reads or writes a results directory calls first, finishes
such a swap (the new directory is complete before the first rename), so no command sees a mix or a gap. A reader
that does not go through normbench (`cat`, pandas) gets the exchange's guarantee only where the exchange exists.

The two names are normbench's: a run that holds `<out>`'s lock removes what a killed run left there (`clear`).
`NORMBENCH_SWAP=rename` takes the two-rename path even where the exchange exists, so tests can kill it midway.

A normbench command that reads `<out>` and writes what it draws from it (`plot`, `report`, and `compare`,
`normbench.load`, which only read) holds `<out>` shared while it does (`held`): a flock on the directory itself,
which the swap takes exclusively (waiting for the readers to finish) before it moves `<out>`. So a reader's
files all come from one directory, and what it writes goes into that one, never into the replacement.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import sys
from pathlib import Path

from normbench.errors import UserError
from normbench.runtime.faults import reached

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def siblings(out: Path) -> tuple[Path, Path]:
    """(`<out>.normbench-new`, `<out>.normbench-old`) beside the real directory that `out` names."""
    real = Path(os.path.realpath(out))
    return real.with_name(f"{real.name}.normbench-new"), real.with_name(f"{real.name}.normbench-old")


def start(out: Path) -> Path:
    """An empty directory beside `out` to build its replacement in, with `out`'s permissions."""
    new = siblings(out)[0]
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    shutil.copystat(out, new)
    return new


def swap(out: Path, new: Path) -> None:
    """Make the complete directory `new` (from `start`) be `out`, and remove the old one; first waits for the
    commands reading `out` (`held`) to finish."""
    out = Path(os.path.realpath(out))
    with _exclusively(out):
        if exchange(out, new):
            reached("swap:exchanged")
            old = new  # where the exchange put the old directory
        else:
            old = siblings(out)[1]
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out, old)
            reached("swap:moved-old")
            with contextlib.suppress(FileNotFoundError):  # a reader's `settle` may have made the second move
                os.rename(new, out)
            reached("swap:moved-new")
    shutil.rmtree(old)


@contextlib.contextmanager
def _exclusively(out: Path):
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger("normbench").info(f"waiting for the normbench commands reading {out} to finish")
            _flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def held(out: Path):
    """Hold the results directory `out` against a swap (`swap`) for as long as the block reads it and writes into
    it; waits while a swap is moving it. Finishes a halfway swap first (`settle`)."""
    while True:
        settle(out)
        try:
            fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise UserError(f"{str(out)!r} not found: is it a results directory?") from None
        except NotADirectoryError:
            raise UserError(f"{str(out)!r} is not a directory: name a results directory") from None
        except OSError as e:
            raise UserError(f"cannot read {str(out)!r}: {e.strerror or e}") from None
        _flock(fd, fcntl.LOCK_SH)
        # Opened just before a swap moved it, the directory held may no longer be `out`: hold the one that is.
        if opened_at(out, fd):
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _flock(fd: int, operation: int) -> None:
    """flock, where the filesystem has it: without (some network filesystems), readers and the swap go unguarded,
    as they did before they took it."""
    try:
        fcntl.flock(fd, operation)
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise


def opened_at(path: Path, fd: int) -> bool:
    """Whether the file open as `fd` is the one at `path` (not one moved or removed since it was opened)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def settle(out: Path) -> None:
    """Finish a two-rename swap that a kill stopped halfway (`<out>` missing, the old directory moved aside):
    the new directory, complete, moves into place. Nothing in every other case; a failure leaves things as they
    were, for the reader's own error to say."""
    out = Path(os.path.realpath(out))
    new, old = siblings(out)
    if out.exists() or not old.exists():
        return
    with contextlib.suppress(OSError):
        os.rename(new, out)
    if not out.exists():  # nothing complete to move in: the old directory goes back
        with contextlib.suppress(OSError):
            os.rename(old, out)


def clear(out: Path) -> None:
    """Remove what a killed swap left beside `out`; only for the holder of `out`'s lock, after `settle`."""
    for leftover in siblings(out):
        shutil.rmtree(leftover, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is not available."""
    if _renameat2 is None or os.environ.get("NORMBENCH_SWAP") == "rename":
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # this filesystem or kernel
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()
