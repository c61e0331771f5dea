"""`manifest.json`: the sha256 of every file that a run wrote into its results directory, written last, so that
a reader can say which file changed since (`normbench.results.reader`).

The data (`config.json`, `metrics.csv`, `diagnostics.csv`) is what every figure and number is drawn from: a
reader refuses a changed one unless trusted (`--trust-edits`), since the report would no longer be of the runs.
What is drawn from the data (the figures, `summary.md`) a reader warns of: `normbench plot` redraws it, and signs
what it redrew. Results written before normbench signed them have no manifest and are read unchecked.

A manifest catches an edit by hand or by accident, not a forgery: whoever edits a file can rewrite its line.

    {"sha256": {"config.json": "9f86d081...", "metrics.csv": "...", "summary.md": "...", "init_scale.png": "..."}}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from normbench.core.diagnostics import DIAGNOSTICS
from normbench.errors import UserError
from normbench.results.store import CONFIG, METRICS, atomic_write

MANIFEST = "manifest.json"
DATA = (CONFIG, METRICS, DIAGNOSTICS)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign(out: Path, names: Iterable[str]) -> None:
    """Write `out`'s manifest: the named files of `out` as they are now."""
    _write(out, {name: digest((Path(out) / name).read_bytes()) for name in names})


def resign(out: Path, names: Iterable[str]) -> None:
    """Record the named files of `out` as they are now, e.g. the figures that `normbench plot` redrew. A
    directory without a manifest stays without: it would vouch for the files it does not list."""
    signed = signatures(out)
    if signed is not None:
        _write(out, {**signed, **{name: digest((Path(out) / name).read_bytes()) for name in names}})


def _write(out: Path, signed: Mapping[str, str]) -> None:
    atomic_write(Path(out) / MANIFEST, json.dumps({"sha256": dict(sorted(signed.items()))}, indent=2) + "\n")


def signatures(out: Path) -> dict[str, str] | None:
    """File name -> sha256 as the manifest records them; None where there is no manifest."""
    path = Path(out) / MANIFEST
    try:
        saved = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{str(path)!r} cannot be read ({e}): delete it to read the results unchecked") from None
    signed = saved.get("sha256") if isinstance(saved, dict) else None
    if not isinstance(signed, dict) or not all(
        isinstance(name, str) and Path(name).name == name and isinstance(sha, str) and _SHA256.fullmatch(sha)
        for name, sha in signed.items()
    ):
        raise UserError(f"{str(path)!r} is not a normbench manifest: delete it to read the results unchecked")
    return signed


def check(out: Path, contents: Mapping[str, bytes], trust_edits: bool = False) -> tuple[list[str], list[str]]:
    """Compare `out`'s files with its manifest (`contents`: the bytes of those already read, which are the ones
    checked). Raises a UserError naming the data files that changed, unless `trust_edits`. Returns warnings, one
    line each, naming the files that changed, and those files."""
    signed = signatures(out)
    if signed is None:
        return [], []
    changed = [name for name, sha in signed.items() if _digest_of(out, name, contents) != sha]
    data = [name for name in changed if name in DATA]
    drawn = [name for name in changed if name not in DATA]
    warnings = []
    if data and not trust_edits:
        raise UserError(
            f"{_names(out, data)} changed since the run wrote {_them(data)} ({MANIFEST} records another sha256), so "
            f"the results may not be the runs'; pass --trust-edits (trust_edits=True in Python) to read {_them(data)} "
            "anyway"
        )
    if data:
        warnings.append(f"{_names(out, data)} changed since the run wrote {_them(data)}; read anyway (trusted)")
    if drawn:
        warnings.append(
            f"{_names(out, drawn)} changed since normbench drew {_them(drawn)} ({MANIFEST}); "
            f"`normbench plot` draws {_them(drawn)} again from the data"
        )
    return warnings, changed


def _digest_of(out: Path, name: str, contents: Mapping[str, bytes]) -> str | None:
    """The file's sha256, None where it is gone or unreadable."""
    if name in contents:
        return digest(contents[name])
    try:
        return digest((Path(out) / name).read_bytes())
    except OSError:
        return None


def _names(out: Path, names: list[str]) -> str:
    quoted = [repr(str(Path(out) / name)) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"
