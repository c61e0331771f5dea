"""A results directory: `config.json` (the resolved config and where it ran) and `metrics.csv` (one row per run
and epoch). Figures are drawn from these two files alone. Every file is written to a temporary name in the same
directory and renamed over the old one, so a reader never sees half a file and a failed run leaves the previous
results as they were. A run's results replace the old ones all at once: written into a new directory, which is
then swapped for the old one (`replace`, `normbench.results.swap`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from normbench.config import Config, ConfigError, from_dict, to_dict
from normbench.core import landscape
from normbench.core.axes import EPOCH, key_columns, run_columns
from normbench.core.grid import cells, plan
from normbench.errors import UserError, refused_write
from normbench.norms import check_norm
from normbench.protocols import check_protocol
from normbench.results.swap import clear, opened_at, settle, swap
from normbench.results.table import (
    REWRITE,
    check_rows,
    key_text,
    number,
    parse_table,
    read_file,
    table_csv,
    the_columns,
    utf8_text,
)
from normbench.runtime.faults import reached

METRICS = "metrics.csv"
CONFIG = "config.json"
UNFINISHED = "unfinished"  # a run under way (`normbench.results.resume`)
LOCK = ".lock"  # held by the run writing the directory (`exclusive`)

# What metrics.csv records of a run at each epoch, after its key columns (`normbench.core.axes`).
METRIC_COLUMNS = (
    "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "test_acc_batch_stats",
    "test_acc_precise", "train_acc_batch_stats", "test_acc_example_weighted", "diverged",
)  # fmt: skip
# The evaluations after the last epoch, in `normbench.core.train.Metrics` order.
AFTER_TRAINING = ("test_acc_batch_stats", "test_acc_precise", "train_acc_batch_stats", "test_acc_example_weighted")
# Columns of METRIC_COLUMNS that tables written before them lack: they read back as NaN (not measured).
LATER_COLUMNS = ("train_acc_batch_stats", "test_acc_example_weighted")
_REQUIRED = tuple(column for column in METRIC_COLUMNS if column not in LATER_COLUMNS)
_UMASK = os.umask(0)
os.umask(_UMASK)


def metric_columns(config: Config) -> tuple[str, ...]:
    """metrics.csv's columns after the key columns: `METRIC_COLUMNS`, then the landscape probes' when the config
    takes them (`train.landscape_steps`), so a study without them keeps its table as it was."""
    return METRIC_COLUMNS + (landscape.COLUMNS if config.train.landscape_steps else ())


def metrics_csv(config: Config, results) -> str:
    """One row per run and epoch (`normbench.results.table`)."""
    probes = landscape.COLUMNS if config.train.landscape_steps else ()

    def rows(result, s, k):
        m = result.metrics
        probed = [getattr(m, column) for column in probes]
        diverged_epoch = int(m.diverged_epoch[s, k])
        epochs = m.train_loss.shape[-1]
        # The extra evaluation modes are measured once, after the last epoch.
        after_training = [number(getattr(m, column)[s, k]) for column in AFTER_TRAINING]
        during = (m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.val_loss, m.val_acc)
        for epoch in range(1, epochs + 1):
            yield [
                epoch,
                *(number(metric[s, k, epoch - 1]) for metric in during),
                *(after_training if epoch == epochs else ["nan"] * len(AFTER_TRAINING)),
                int(0 < diverged_epoch <= epoch),
                *(number(metric[s, k, epoch - 1]) for metric in probed),
            ]

    return table_csv(config, results, metric_columns(config), rows)


# The suffix of atomic_write's temporary files: a killed write's orphans are told from a user's own `.*.tmp`.
TMP_SUFFIX = ".normbench.tmp"


def atomic_write(path: Path, data: str | bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        reached(f"write:{path.name}")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def prepare_output_dir(out: Path) -> None:
    """Create the directory and prove it is writable, and its parent, where its replacement is built (`replace`),
    before any training time is spent."""
    settle(out)  # a replacement that a kill stopped halfway, before anything here would create an empty `out`
    try:
        make_writable(out)
        check_writable(Path(os.path.realpath(out)).parent)
    except OSError as e:
        raise refused_write(f"cannot write results to {str(out)!r}", e) from e


def make_writable(directory: Path) -> None:
    """Create `directory` and prove that files can be written in it; an OSError says why not."""
    if Path(directory).exists() and not Path(directory).is_dir():  # else mkdir's reason would be "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))
    Path(directory).mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe.")
    os.close(fd)
    os.unlink(probe)


def check_writable(directory: Path) -> None:
    """Prove, creating nothing that stays, that `directory` can be made where it does not exist yet, and written:
    a directory can be made in it, or in its nearest existing ancestor; an OSError says why not."""
    existing = next(path for path in (Path(directory), *Path(directory).parents) if path.exists())
    os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".normbench-probe."))


def check_same_config(out: Path, config: Config) -> None:
    """Refuse to replace results that another config produced: mixing them up would be silent."""
    differing = config_differences(Path(out) / CONFIG, config)
    if differing:
        raise UserError(
            f"{str(out)!r} holds results of a different config (differs in {', '.join(differing)}); "
            "pass --force to replace them, or --out for another directory"
        )


def config_differences(path: Path, config: Config) -> list[str]:
    """The dotted keys in which the config saved at `path` differs from `config`; none if nothing is saved."""
    if not Path(path).exists():
        return []
    return differences(_config_file(Path(path)), config)


def differences(a: Config, b: Config) -> list[str]:
    """The dotted keys in which two configs differ."""
    old, new = _flatten(to_dict(a)), _flatten(to_dict(b))
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


# The sections of a config that read results rather than train them: revisable without retraining.
REPORTING = ("report", "figures")


def revise_reporting(out: Path, saved: Config, meta: dict, config: Config, draw) -> list[Path]:
    """Give the results in `out`, of the config `saved` (with config.json's `meta`), the claims, tuning and figures
    of `config`, which must train exactly the runs they hold (anything else is another study: rerun it).
    `draw(config)` redraws them first, so a claim that cannot be evaluated leaves config.json as it was; returns
    what it drew and config.json."""
    training = [k for k in differences(saved, config) if k.split(".")[0] not in REPORTING]
    if training:
        raise UserError(
            f"{str(out)!r} holds runs of a different config (differs in {', '.join(training)}); only "
            f"{' and '.join(REPORTING)} can change without retraining"
        )
    drawn = draw(config)
    write_config(Path(out), config, meta)
    return [*drawn, Path(out) / CONFIG]


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Lock:
    """A results directory's lock, held by one run (`exclusive`): flock on its `.lock` file."""

    def __init__(self, handle):
        self.handles = [handle]

    def carry_to(self, directory: Path) -> None:
        """Hold the lock of `directory` too, a replacement about to be swapped in: so `out/.lock` is held before
        and after the swap."""
        handle = open(Path(directory) / LOCK, "w")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: no one else can hold it
        self.handles.append(handle)


@contextlib.contextmanager
def exclusive(out: Path):
    """Hold `out` for one run: a second run into the same directory stops instead of interleaving its files.
    Holding it, the leftovers of a killed run's writes are known to be orphans: removed. Only normbench's own,
    where normbench writes: temporary files in `out` itself and under `out/unfinished`, and a killed
    replacement's directories beside `out` (`normbench.results.swap`). Yields the `Lock`.

    The `.lock` file goes when the run ends, so a finished directory holds its results alone. A run that opened
    the file just before it went would lock a file no longer there, beside a third run locking a new one: a lock
    counts only while its file is the one at the path."""
    path = Path(out) / LOCK
    while True:
        handle = open(path, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(f"another normbench run is writing to {str(out)!r}; wait for it to finish") from None
        if opened_at(path, handle.fileno()):
            break
        handle.close()
    lock = Lock(handle)
    try:
        for orphan in [*Path(out).glob(f".*{TMP_SUFFIX}"), *(Path(out) / UNFINISHED).rglob(f".*{TMP_SUFFIX}")]:
            orphan.unlink()
        clear(out)
        yield lock
    finally:
        path.unlink(missing_ok=True)  # before the lock is released, so no run can lock a file about to go
        for handle in lock.handles:
            handle.close()


def replace(out: Path, new: Path, owned: set[str], lock: Lock) -> None:
    """Make `new` (`normbench.results.swap.start`, holding complete results) the results directory `out`, in one
    step that a kill cannot split: `out` is wholly old or wholly new. The entries of `out` that normbench did not
    write come along, hard-linked (copied where a link fails): of the old ones only the `owned` names (normbench's
    files), the run state (`unfinished/`, `.lock`) and a killed write's temporary files go, with the old
    directory. `lock` moves along, held throughout."""
    out, new = Path(out), Path(new)
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in owned or name in (LOCK, UNFINISHED) or name.endswith(TMP_SUFFIX) or os.path.lexists(new / name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / name, symlinks=True, copy_function=_link)
        else:
            _link(entry, new / name)
    lock.carry_to(new)
    reached("swap:built")
    swap(out, new)


def _link(source, target) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # a filesystem without hard links, a file on another mount
        shutil.copy2(source, target, follow_symlinks=False)


def write_config(out: Path, config: Config, meta: dict) -> None:
    atomic_write(out / CONFIG, json.dumps({"config": to_dict(config), **meta}, indent=2) + "\n")


def read_meta(out: Path) -> dict:
    """What config.json records besides the config (environment, timings, one example's input shape); empty
    when it is missing or unreadable."""
    try:
        return json.loads((Path(out) / CONFIG).read_text())
    except (OSError, ValueError):
        return {}


def read_config(out: Path) -> Config:
    """config.json's config (`decode_config`). Commands read a results directory through
    `normbench.results.reader`, which also holds it against a swap and checks its manifest."""
    settle(out)
    path = Path(out) / CONFIG
    return decode_config(read_file(path), path)[0]


def read_metrics(out: Path, config: Config | None = None) -> dict[str, np.ndarray]:
    """metrics.csv as columns (`decode_metrics`), checked against `config` (by default the directory's)."""
    config = config or read_config(out)
    path = Path(out) / METRICS
    return decode_metrics(read_file(path), path, config)


def decode_config(raw: bytes, path: Path | str = CONFIG) -> tuple[Config, dict]:
    """config.json's bytes as the config and what the file records besides it (`read_meta`); `path` names the
    file in errors."""
    saved = _json(raw, path)
    try:
        return from_dict(Config, saved["config"]), {k: v for k, v in saved.items() if k != "config"}
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{str(path)!r} is not a normbench config: {e}") from None


def _json(raw: bytes, path: Path | str):
    text = utf8_text(raw, path)
    if not text.strip():
        raise UserError(f"{str(path)!r} is empty: the file is truncated or damaged")
    try:
        saved = json.loads(text)
    except ValueError as e:
        raise UserError(f"{str(path)!r} is not JSON ({e}): the file is truncated or damaged") from None
    if not isinstance(saved, dict):
        raise UserError(f"{str(path)!r} holds a JSON {type(saved).__name__}, not an object: it is not normbench's")
    return saved


def _config_file(path: Path) -> Config:
    return decode_config(read_file(path), path)[0]


def decode_metrics(raw: bytes, path: Path | str, config: Config) -> dict[str, np.ndarray]:
    """metrics.csv's bytes as columns (`parse_metrics`), refused in one line unless they are a whole table of
    `config`'s runs: its columns, every row whole, every run that the config trains with each of its epochs once
    (and any tuning extension's run likewise)."""
    text = utf8_text(raw, path)
    if not text.strip():
        raise UserError(f"{str(path)!r} is empty: {REWRITE}")
    lines = text.split("\n")
    if lines[-1]:  # normbench ends every line, the last too
        raise UserError(f"{str(path)!r} ends mid-line (line {len(lines)} has no line end): {REWRITE}")
    rows = list(csv.reader(lines[:-1]))
    header = rows[0]
    _check_header(header, path, config)
    check_rows(rows, path)
    columns = parse_metrics(text, path)
    _check_runs(rows, path, config)
    return columns


def _check_header(header: list[str], path: Path | str, config: Config) -> None:
    expected = [*run_columns(config), *metric_columns(config)]
    missing = [c for c in expected if c not in header and c not in LATER_COLUMNS]
    unknown = [c for c in header if c not in expected]
    twice = sorted({c for c in header if header.count(c) > 1})
    problems = {"lacks {}": missing, "has {} twice": twice, "has {}, which its config does not write": unknown}
    for problem, names in problems.items():
        if names:
            raise UserError(f"{str(path)!r} {problem.format(the_columns(names))}: it is damaged or not this config's "
                            "table")  # fmt: skip


def _check_runs(rows: list[list[str]], path: Path | str, config: Config) -> None:
    """Every run of the config present, and every run (extensions' too) with epochs 1 ... train.epochs once each:
    a table cut at a line boundary lacks the last runs' last epochs, or whole runs."""
    keys = run_columns(config)
    epoch = rows[0].index(EPOCH)
    epochs: dict[tuple, list[str]] = {}
    for row in rows[1:]:
        epochs.setdefault(tuple(row[: len(keys)]), []).append(row[epoch])
    whole = [str(e) for e in range(1, config.train.epochs + 1)]
    for run, seen in epochs.items():
        if seen != whole:
            rows = f"{len(seen)} row{'' if len(seen) == 1 else 's'}"
            raise UserError(f"{str(path)!r} holds {rows} of the run {_run_text(keys, run)} (epochs {seen[0]} to "
                            f"{seen[-1]}), not one per epoch 1 to {config.train.epochs}: {REWRITE}")  # fmt: skip
    try:  # a user's own norm or protocol, registered where the runs were trained: without it they cannot be laid out
        for norm in config.sweep.norms:
            check_norm(norm, None, ())
        for protocol in config.sweep.protocols:
            check_protocol(protocol)
    except ConfigError as e:
        raise UserError(
            f"{str(path)!r} holds runs that this process cannot lay out: {e}; register it as the run "
            "that wrote them did (docs/adding_a_norm.md for a norm)"
        ) from None
    expected = [
        tuple(key_text(identity[c]) for c in keys) for cell in cells(config) for identity in plan(config, cell).keys()
    ]
    missing = [run for run in expected if run not in epochs]
    if missing:
        raise UserError(f"{str(path)!r} lacks {len(missing)} of the config's {len(expected)} runs (the first: "
                        f"{_run_text(keys, missing[0])}): {REWRITE}")  # fmt: skip


def _run_text(keys, run) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(keys, run))


def parse_metrics(text: str, path: Path | str = METRICS) -> dict[str, np.ndarray]:
    """The text of a metrics table as columns (`normbench.results.table.parse_table`), e.g. `metrics_csv`'s
    output; `LATER_COLUMNS` that an older table lacks as NaN. `path` names it in errors."""
    return _with_later_columns(parse_table(text, path, _REQUIRED))


def _with_later_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = len(columns["epoch"])
    return {**columns, **{c: np.full(rows, np.nan) for c in LATER_COLUMNS if c not in columns}}


def in_current_columns(text: str) -> str:
    """A metrics table's text with the `LATER_COLUMNS` that it lacks put in their places, "nan" in every row: a
    cell that an interrupted run kept before they existed (`normbench.results.resume`) joins the others' table."""
    rows = list(csv.reader(text.splitlines()))
    header = rows[0]
    missing = [c for c in LATER_COLUMNS if c not in header]
    if not missing:
        return text
    keys = key_columns(header)
    order = [*keys, *METRIC_COLUMNS, *(c for c in header[len(keys) :] if c not in METRIC_COLUMNS)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        values = dict(zip(header, row))
        writer.writerow([c if row is header else values.get(c, "nan") for c in order])
    return out.getvalue()
