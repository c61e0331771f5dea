"""A results directory: `config.json` (the resolved config and where it ran) and `metrics.csv` (one row per run
and epoch). Figures are drawn from these two files alone. Every file is written to a temporary name in the same
directory and renamed over the old one, so a reader never sees half a file and a failed run leaves the previous
results as they were. A run's results replace the old ones all at once: written into a new directory, which is
then swapped for the old one (`replace`, `normbench.results.swap`).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from normbench.config import Config, from_dict, to_dict
from normbench.core import landscape
from normbench.core.axes import key_columns
from normbench.errors import UserError
from normbench.results.swap import clear, settle, swap
from normbench.results.table import number, parse_table, read_table, table_csv
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
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
        os.rmdir(tempfile.mkdtemp(dir=Path(os.path.realpath(out)).parent, prefix=".normbench-probe."))
    except OSError as e:
        raise UserError(f"cannot write results to {str(out)!r}: {e.strerror or e}") from e


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
    old = _flatten(to_dict(_read_config_file(Path(path))))
    new = _flatten(to_dict(config))
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


# The sections of a config that read results rather than train them: revisable without retraining.
REPORTING = ("report", "figures")


def revise_reporting(out: Path, config: Config, draw) -> list[Path]:
    """Give the results in `out` the claims, tuning and figures of `config`, which must train exactly the runs
    they hold (anything else is another study: rerun it). `draw(config)` redraws them first, so a claim that
    cannot be evaluated leaves config.json as it was; returns what it drew."""
    path = Path(out) / CONFIG
    if not path.exists():
        raise UserError(f"{str(path)!r} not found: is {str(out)!r} a results directory?")
    training = [k for k in config_differences(path, config) if k.split(".")[0] not in REPORTING]
    if training:
        raise UserError(
            f"{str(out)!r} holds runs of a different config (differs in {', '.join(training)}); only "
            f"{' and '.join(REPORTING)} can change without retraining"
        )
    drawn = draw(config)
    saved = json.loads(path.read_text())
    saved["config"] = to_dict(config)
    atomic_write(path, json.dumps(saved, indent=2) + "\n")
    return drawn


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
        if _same_file(path, handle):
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


def _same_file(path: Path, handle) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


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
    settle(out)  # every reader of a results directory starts here
    path = Path(out) / CONFIG
    if not path.exists():
        raise UserError(f"{str(path)!r} not found: is {str(out)!r} a results directory?")
    return _read_config_file(path)


def _read_config_file(path: Path) -> Config:
    try:
        return from_dict(Config, json.loads(path.read_text())["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{str(path)!r} is not a normbench config: {e}") from None


def read_metrics(out: Path) -> dict[str, np.ndarray]:
    """The metrics table as columns (`normbench.results.table.parse_table`); `LATER_COLUMNS` that an older table
    lacks as NaN."""
    settle(out)
    return _with_later_columns(read_table(Path(out) / METRICS, _REQUIRED))


def parse_metrics(text: str, path: Path | str = METRICS) -> dict[str, np.ndarray]:
    """`read_metrics` of the text of a metrics table, e.g. `metrics_csv`'s output; `path` names it in errors."""
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
