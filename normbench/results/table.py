"""The one writer and reader of normbench's tables (`metrics.csv`, `diagnostics.csv`): one row per run and
whatever the table records of it, each row starting with the run's key columns (`normbench.core.axes`), then
`epoch`, then the table's own columns. Readers find the key columns in the header, so a table says by itself
which runs it holds.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from normbench.config import Config
from normbench.core.axes import EPOCH, key_columns, run_columns
from normbench.core.grid import plan
from normbench.errors import UserError

TEXT_COLUMNS = {"model", "norm", "protocol"}
INT_COLUMNS = {"batch_size", "ghost_size", "seed", EPOCH, "diverged", "layer"}
_INT = re.compile(r"-?\d+")


def number(x) -> str:
    """A float32 value to its 7 significant digits: all it holds, without the noise of XLA's rounding
    (an accuracy of 113/1000 computed as 113 * 0.001f would print as 0.113000005)."""
    return f"{float(x):.7g}"


def key_text(value) -> str:
    """A key column's value as it reads back exactly: floats by repr, the rest as written."""
    return repr(value) if isinstance(value, float) else str(value)


def table_csv(
    config: Config, results, columns: tuple[str, ...], rows: Callable[[object, int, int], Iterable[list]]
) -> str:
    """The table of `results` (one `CellResult` per cell): for the run at (seed index s, run index k) of each
    cell, one line per list that `rows(result, s, k)` yields, after the run's key columns. `columns` names
    what those lists hold, `epoch` first."""
    keys = run_columns(config)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys + columns)
    for result in results:
        identities = plan(config, result.cell).keys()
        per_seed = len(identities) // len(config.sweep.seeds)
        for r, identity in enumerate(identities):
            key = [key_text(identity[c]) for c in keys]
            for line in rows(result, *divmod(r, per_seed)):
                writer.writerow(key + list(line))
    return out.getvalue()


def join_tables(tables: list[str]) -> str:
    """One table from several with the same header (one per cell), in the given order."""
    return tables[0] + "".join(table.split("\n", 1)[1] for table in tables[1:])


def read_file(path: Path | str) -> bytes:
    """A results file's bytes, or one line saying why not."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} not found: is {str(path.parent)!r} a results directory?") from None
    except IsADirectoryError:
        raise UserError(f"{str(path)!r} is a directory, not the file normbench writes there: it is damaged") from None
    except OSError as e:
        raise UserError(f"cannot read {str(path)!r}: {e.strerror or e}") from None


def utf8_text(raw: bytes, path: Path | str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise UserError(f"{str(path)!r} is not UTF-8 text (byte {e.start} is not): it is damaged") from None


REWRITE = "the file is truncated or damaged; rerun the study to rewrite it"


def read_table(path: Path | str, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """The table in the file `path` (`parse_table`), refused in one line where the file ends mid-line: normbench
    ends every line, the last too, so a file without its last line end was cut while written or copied."""
    text = utf8_text(read_file(path), path)
    if text and not text.endswith("\n"):
        last = text.count("\n") + 1
        raise UserError(f"{str(path)!r} ends mid-line (line {last} has no line end): {REWRITE}")
    return parse_table(text, path, required)


def parse_table(text: str, path: Path | str, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """A table's text as columns: strings for names, ints for counts, (rows, bins) floats for histograms
    (`*_hist`, space-separated), floats for the rest; a swept field's key column as its values read. Refused in
    one line unless it has `epoch` and the `required` columns, each once, and rows of as many fields as its
    header."""
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise UserError(f"{str(path)!r} is empty: {REWRITE}")
    header = rows[0]
    _check_columns(header, [EPOCH, *required], path)
    check_rows(rows, path)
    keys = set(key_columns(header))
    try:
        return {name: _column(name, list(raw), keys) for name, raw in zip(header, zip(*rows[1:]))}
    except ValueError as e:
        raise UserError(f"{str(path)!r} holds a value that is not of its column's type ({e}): it is damaged") from None


def check_rows(rows: list[list[str]], path: Path | str) -> None:
    """Refuse a table (its header first) that has no rows, or a row of other than its header's number of fields."""
    header = rows[0]
    if len(rows) == 1:
        raise UserError(f"{str(path)!r} holds its header but no rows: {REWRITE}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{str(path)!r} line {line} has {len(row)} fields where its header has {len(header)}: "
                            f"{REWRITE}")  # fmt: skip


def the_columns(names: list[str]) -> str:
    """'the column X' or 'the columns X, Y', as a table's errors name them."""
    return f"the {'column' if len(names) == 1 else 'columns'} {', '.join(names)}"


def _check_columns(header: list[str], required: list[str], path: Path | str) -> None:
    missing = [c for c in dict.fromkeys(required) if c not in header]
    if missing:
        raise UserError(f"{str(path)!r} lacks {the_columns(missing)}: it is damaged or not the table normbench "
                        "writes there")  # fmt: skip
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserError(f"{str(path)!r} has {the_columns(twice)} twice: it is damaged")


def _column(name: str, raw: list[str], keys: set[str]) -> np.ndarray:
    if name in TEXT_COLUMNS:
        return np.asarray(raw)
    if name in INT_COLUMNS:
        return np.asarray(raw, dtype=np.int64)
    if name.endswith("_hist"):
        return np.array([[float(v) for v in r.split()] for r in raw]).reshape(len(raw), -1)
    if name in keys:
        return _swept(raw)
    return np.asarray(raw, dtype=np.float64)


def _swept(raw: list[str]) -> np.ndarray:
    """A swept field's column: integers, numbers or (any other) text."""
    if all(_INT.fullmatch(v) for v in raw):
        return np.asarray(raw, dtype=np.int64)
    try:
        return np.asarray(raw, dtype=np.float64)
    except ValueError:
        return np.asarray(raw)
