"""The reader of a results directory that every normbench command uses (`plot`, `report`, `compare`,
`normbench.load`): one snapshot of its data, checked.

- held: the directory is held against a `--force` swap (`normbench.results.swap.held`) while it is read, and,
  for the commands that write into it (`plot`, `report`), until they have written: what they draw from the old
  results never lands among the new ones;
- read once: `config.json` and `metrics.csv` are read into memory once, and the bytes parsed are the bytes
  checked;
- checked against the run's manifest (`normbench.results.manifest`): a changed data file is refused unless
  trusted, a changed drawing is warned of (`ResultsWarning`);
- whole: `metrics.csv` decoded and validated against the config (`normbench.results.store.decode_metrics`), so
  that a truncated or damaged table is one line of error, never a number read short.

    with reading(out) as results:   # the directory is held until the block ends
        results.config, results.columns, results.meta
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normbench.config import Config
from normbench.errors import UserError
from normbench.results import manifest
from normbench.results.store import CONFIG, METRICS, UNFINISHED, decode_config, decode_metrics, read_file
from normbench.results.swap import held


class ResultsWarning(UserWarning):
    """What a reader of results says without refusing them: a drawing changed since the run, a trusted edit, or
    (`normbench compare`) directories that differ where no column shows it."""


@dataclass(frozen=True)
class Results:
    path: Path
    config: Config
    meta: dict  # what config.json records besides the config (`normbench.results.store.read_meta`)
    columns: dict[str, np.ndarray]  # metrics.csv, as `normbench.results.store.parse_metrics` gives it
    metrics_text: str
    edited: tuple[str, ...]  # the files that changed since the run, read nonetheless (`trust_edits`)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """One example's shape, as config.json records it (results written before it did: None)."""
        shape = self.meta.get("input_shape")
        return tuple(shape) if shape else None


@contextlib.contextmanager
def reading(out: Path | str, trust_edits: bool = False) -> Iterator[Results]:
    """The results in `out`, held against a swap until the block ends. `trust_edits`: read data files that
    changed since the run (said in a warning) instead of refusing them."""
    out = Path(out)
    with held(out):
        if not (out / CONFIG).exists() and (out / UNFINISHED).is_dir():
            raise UserError(
                f"{str(out)!r} holds no finished results: a run into it is under way or was interrupted "
                f"({UNFINISHED}/); rerun its command to finish it"
            )
        raw = {name: read_file(out / name) for name in (CONFIG, METRICS)}
        said, edited = manifest.check(out, raw, trust_edits)
        for warning in said:
            warnings.warn(warning, ResultsWarning, stacklevel=3)
        config, meta = decode_config(raw[CONFIG], out / CONFIG)
        columns = decode_metrics(raw[METRICS], out / METRICS, config)
        yield Results(out, config, meta, columns, raw[METRICS].decode(), tuple(edited))


def read_results(out: Path | str, trust_edits: bool = False) -> Results:
    """`reading` for a command that only reads: the directory is held while it is read."""
    with reading(out, trust_edits) as results:
        return results
