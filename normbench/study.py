"""Run a whole study: data, sweep, results and figures into one directory. The CLI's `run` is this function.

In a multi-process run every process trains its share, and process 0 alone claims, resumes and writes the
directory.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import flax
import jax
import numpy as np
import optax

from normbench.config import Config
from normbench.core.budget import check_memory, estimate
from normbench.core.diagnostics import DIAGNOSTICS
from normbench.core.grid import Cell, cells
from normbench.core.sweep import (
    CellResult,
    auto_processes,
    check_fits,
    resolve_processes,
    resolve_workers,
    run_sweep,
    training_time,
    trains_in_phases,
)
from normbench.data import load
from normbench.errors import MachineError, UserError
from normbench.reports.layer_figures import FIGURES as DIAGNOSTICS_FIGURES
from normbench.reports.plots import FIGURES, FORMATS, draw_figures
from normbench.reports.progress import LogProgress, Progress, logger
from normbench.reports.report import REPORT
from normbench.results.diagnostics import diagnostics_csv
from normbench.results.manifest import MANIFEST, sign
from normbench.results.reader import ResultsWarning, read_results
from normbench.results.resume import Unfinished
from normbench.results.store import (
    CONFIG,
    METRICS,
    UNFINISHED,
    atomic_write,
    check_same_config,
    differences,
    exclusive,
    metrics_csv,
    prepare_output_dir,
    replace,
    write_config,
)
from normbench.results.swap import start as start_replacement
from normbench.results.table import join_tables
from normbench.results.tuning import (
    DIRECTIONS,
    Extension,
    cell_tables,
    configurations,
    edges,
    next_round,
    searched_grids,
)
from normbench.runtime.cache import enable_compilation_cache
from normbench.runtime.calibration import device_kind, last_rate, record
from normbench.runtime.faults import reached
from normbench.runtime.parallel import from_writer, is_writer, on_writer
from normbench.runtime.programs import cpuinfo
from normbench.version import __version__


def run_study(
    config: Config,
    out: Path,
    progress: Progress | None = None,
    force: bool = False,
    workers: int | None = None,
    size_check: bool = True,
    processes: int | None = None,
) -> dict[str, float] | None:
    """Train every cell of `config` and write `out`; returns the wall time of each phase in seconds, or None where
    `out` already held this config's finished results (`is_finished`) and `force` is not set. `workers`:
    how many cells train at once, `processes`: in how many worker processes, one per core (`run_sweep`; None:
    as many as `auto_processes` chooses for the estimated sweep).
    `size_check`: refuse a sweep whose estimated memory exceeds the memory available (`normbench.core.budget`),
    before the output directory is touched. `progress` hears of each cell (default: log lines).

    Three steps: `claim` the directory, `train_study`, `write_study`. Everything that can fail on bad input (data,
    batch shapes, the output directory) fails before the first file is replaced, so earlier results survive a bad
    run. Each cell's rows are kept as soon as it finishes (`normbench.results.resume`): after an interruption, the
    same call trains only the cells still missing. With `report.tune`, a choice at an edge of its grid extends the
    grid first (`extend_tuned_grids`).
    """
    out = Path(out)
    # a bad argument is refused whatever `out` holds
    workers, processes = resolve_workers(workers), resolve_processes(processes, config)
    if not force and _finished(out, config):
        return None
    all_cells = cells(config)
    if not all(trains_in_phases(config, cell) for cell in all_cells):
        enable_compilation_cache()  # for the whole-grid programs: cells in phases keep theirs compiled themselves
    start = time.perf_counter()
    dataset = load(config.data)
    check_fits(config, dataset)  # a bad batch shape says so before any question about the output directory
    cost = estimate(config, dataset, workers, last_rate(device_kind()))
    if size_check:
        check_memory(cost)
    chosen = processes is None
    if chosen:
        processes = auto_processes(config, all_cells, cost.train_seconds())
    with contextlib.ExitStack() as claimed:
        held = claim(out, config, force, claimed, progress)
        logger.info(f"estimate: {cost.text()}")  # after every refusal, which each stays one line
        if chosen and processes > 1:
            logger.info(f"training in {processes} worker processes, one per core (--processes 1: in this one)")
        loaded, cpu_loaded = time.perf_counter(), time.process_time()
        if is_writer():
            # Importing matplotlib is most of the write phase: done on a thread while the cells compile and train
            # (XLA releases the GIL), it is over by the time the figures are drawn.
            threading.Thread(target=_import_matplotlib, name="import-matplotlib", daemon=True).start()
        results, extensions, extended = train_study(config, all_cells, dataset, held, progress, workers, processes)
        trained, cpu_share = time.perf_counter(), (time.process_time() - cpu_loaded) / (time.perf_counter() - loaded)
        # Wall-clock phases, which add up: "train" while any cell trained, "compile" the rest of the sweep, when
        # every trainer waited for compilation (the rest of compiling overlapped training).
        every = results + extended
        busy = training_time(every)
        timings = {"data_s": loaded - start, "compile_s": trained - loaded - busy, "train_s": busy}
        work = {"trace_s": sum(r.trace_s for r in every), "xla_compile_s": sum(r.compile_s for r in every)}
        spread = max((r.processes for r in every), default=1)  # this run's worker processes; 1: it trained alone
        write_study(config, out, held, all_cells, extensions, timings, trained, work, dataset.train_x.shape[1:],
                    spread)  # fmt: skip
        if is_writer():
            # This machine's rate, for the next estimate: what the study's own cells trained now computed (the
            # estimate has no extensions), and in what time.
            trained_now = [all_cells.index(r.cell) for r in results]
            record(device_kind(), config.name, sum(cost.cell_flops[i] for i in trained_now),
                   sum(cost.cell_steps[i] for i in trained_now), training_time(results), cpu_share)  # fmt: skip
    return timings


@dataclass
class Claim:
    """What process 0 holds of the output directory while its study runs (nothing on the other processes): the
    lock, the run's `unfinished/` and the cells kept there so far, by number (`normbench.results.resume`)."""

    lock: object = None
    unfinished: Unfinished | None = None
    finished: dict[int, str] = field(default_factory=dict)


def claim(
    out: Path, config: Config, force: bool, claimed: contextlib.ExitStack, progress: Progress | None = None
) -> Claim:
    """Step 1: take the output directory for this run, holding it until `claimed` closes; a directory of another
    config's results is refused unless `force`, and an interrupted run of this one is resumed. What `progress`
    writes to (TensorBoard's directory) is checked first: a refused path leaves no new output directory behind."""
    held = Claim()

    def on_process_0():
        if progress is not None:
            progress.prepare()  # creates nothing: a refused output directory leaves no new TensorBoard one either
        prepare_output_dir(out)
        held.lock = claimed.enter_context(exclusive(out))
        held.unfinished = Unfinished(out)
        # Even where unfinished/ holds a run of this config: one that --force began, maybe failing before its first
        # cell, must not replace another config's results on a later run without --force.
        if not force:
            check_same_config(out, config)
        held.unfinished.begin(config, force)
        held.finished = held.unfinished.finished()

    on_writer(on_process_0)
    return held


def train_study(config: Config, all_cells: list[Cell], dataset, held: Claim, progress: Progress | None,
                workers: int, processes: int = 1
                ) -> tuple[list[CellResult], list[Extension], list[CellResult]]:  # fmt: skip
    """Step 2: train the study's cells not yet kept, then the extensions of its tuned grids
    (`extend_tuned_grids`): (the study's results, the extensions, their results)."""
    listener = (progress or LogProgress()) if is_writer() else Progress()  # one process tells
    train = functools.partial(
        _train_part, dataset=dataset, held=held, listener=listener, workers=workers, processes=processes
    )
    results = train(config, dict(enumerate(all_cells)))
    extensions, extended = extend_tuned_grids(config, all_cells, held.finished, train)
    return results, extensions, extended


def _train_part(part: Config, numbered: dict[int, Cell], dataset, held: Claim, listener: Progress,
                workers: int, processes: int) -> list[CellResult]:  # fmt: skip
    """Train the cells of `part` not yet kept, each kept under its number: the study's cells, numbered in order, or
    an extension's, after them (`normbench.results.tuning`)."""
    # Only process 0 reads what is finished; every process must train the same cells.
    done = from_writer(np.array([i in held.finished for i in numbered]))
    if done.any() and held.unfinished is not None:
        logger.info(f"resuming: {done.sum()} of {len(numbered)} cells already finished in {held.unfinished.root}")
    index = {cell: i for i, cell in numbered.items()}
    return run_sweep(
        part,
        dataset,
        listener,
        todo=[cell for cell, kept in zip(numbered.values(), done) if not kept],
        on_result=functools.partial(_keep, part, held, index),
        checkpoints_for=lambda cell: held.unfinished.checkpoints(index[cell]),
        workers=workers,
        processes=processes,
    )


def _keep(part: Config, held: Claim, index: dict[Cell, int], result: CellResult) -> None:
    """Keep a finished cell's rows in the run's `unfinished/`, so that a rerun after an interruption skips it."""
    if held.unfinished is None:
        return
    i = index[result.cell]
    held.finished[i] = metrics_csv(part, [result])
    layers = diagnostics_csv(part, [result]) if result.diagnostics else None
    try:
        held.unfinished.record(i, held.finished[i], layers)
    except OSError as e:  # a full disk mid-sweep: the cells kept so far survive for a rerun
        raise MachineError(
            f"cannot keep a finished cell in {str(held.unfinished.root)!r}: {e.strerror or e}; make room "
            "and rerun the same command, which trains only the cells not kept"
        ) from e
    reached(f"kept:{i}")


def write_study(config: Config, out: Path, held: Claim, all_cells: list[Cell], extensions: list[Extension],
                timings: dict, trained: float, work: dict, input_shape, processes: int = 1) -> None:  # fmt: skip
    """Step 3: on process 0, write the results of every cell kept (`write_results`); `timings` gains the write's."""
    if not is_writer():
        timings["write_s"] = time.perf_counter() - trained
        return
    searched = searched_grids(config, all_cells, extensions) if config.report.tune else None
    try:
        write_results(config, out, held.lock, held.unfinished, held.finished, len(all_cells) + len(extensions),
                      timings, trained, work, input_shape, searched, processes)  # fmt: skip
    except OSError as e:  # a full disk, a read-only file: the finished cells are kept, a rerun writes them
        raise MachineError(
            f"cannot write the results to {str(out)!r}: {e.strerror or e}; the finished cells are kept in "
            f"{str(held.unfinished.root)!r}: make room and rerun the same command"
        ) from e


def is_finished(out: Path, config: Config) -> bool:
    """Whether `out` holds the complete results of `config`, as every reader takes them (`normbench.results.reader`:
    a whole table, its data unedited since its run), and no run of it under way or interrupted (`unfinished/`).
    Damaged or edited results are not finished: a run replaces them. Asked holding the directory (`exclusive`): a
    run writing it is refused as ever, not taken for finished."""
    out = Path(out)
    if not ((out / METRICS).is_file() and (out / CONFIG).is_file()):
        return False
    with exclusive(out):
        if (out / UNFINISHED).exists():
            return False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResultsWarning)  # a redrawn figure does not make the runs unfinished
                results = read_results(out)
        except UserError:
            return False
    return not differences(results.config, config)


def _finished(out: Path, config: Config) -> bool:
    """`is_finished` as process 0 finds it, on every process: they all train the same cells, or none."""
    found = []
    on_writer(lambda: found.append(is_finished(out, config)))
    return bool(from_writer(np.array(bool(found) and found[0])))


def _import_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")  # as `normbench.reports.plots.figure_bytes` does
    import matplotlib.pyplot  # noqa: F401


def extend_tuned_grids(
    config: Config, study_cells: list[Cell], finished: dict[int, str], train
) -> tuple[list[Extension], list[CellResult]]:
    """Extend the grids of `report.tune` where a choice sits at an edge (`normbench.results.tuning`): round after
    round, process 0 finds the edges in the kept rows (`finished`, by cell number), and every process trains the
    extensions they call for, with `train(config, {number: cell})`, until no choice sits at an edge with steps
    left. Returns the extensions, in the order of their numbers after the study's cells, and their results."""
    extensions, results = [], []
    if not (config.report.tune and config.report.tune_extensions):
        return extensions, results
    while True:
        most = max(len(configurations(config, cell)) for cell in study_cells)
        found = np.zeros((len(study_cells), len(config.report.tune), len(DIRECTIONS), most), bool)
        if is_writer():
            found = edges(config, cell_tables(finished, len(study_cells), extensions))
        new = next_round(config, from_writer(found), extensions)
        if not new:
            return extensions, results
        # One program per cell and new value: the cells stepping the same way train that value side by side.
        parts: dict[tuple, dict[int, Extension]] = {}
        for number, extension in enumerate(new, start=len(study_cells) + len(extensions)):
            parts.setdefault((extension.axis, extension.direction, extension.step), {})[number] = extension
        extensions += new
        for numbered in parts.values():
            first = next(iter(numbered.values()))
            value, side = first.value(config), "largest" if first.direction > 0 else "smallest"
            logger.info(
                f"{first.axis} chosen at its grid's {side} value in {len(numbered)} cell(s): training "
                f"{first.axis}={value:g} there, step {first.step} of {config.report.tune_extensions}"
            )
            results += train(first.config(config), {n: e.restrict(study_cells[e.cell]) for n, e in numbered.items()})


def write_results(config, out, lock, unfinished, finished, n_cells, timings, trained, work, input_shape,
                  searched=None, processes: int = 1) -> None:  # fmt: skip
    """Write the complete results into a new directory beside `out` and swap it in (`replace`): killed at any
    point, `out` holds the old results or the new ones. The old directory goes with this run's `unfinished/`.
    `input_shape` (one example's) sizes the batch statistics in summary.md; `searched`, each cell's grids of the
    tuned axes as searched (`normbench.results.tuning.searched_grids`), goes into config.json, and so do the
    `processes` the cells trained in (`environment`)."""
    new = start_replacement(out)
    atomic_write(new / METRICS, join_tables([finished[i] for i in range(n_cells)]))
    if config.train.diagnostics_at:
        layers = unfinished.finished_diagnostics()
        atomic_write(new / DIAGNOSTICS, join_tables([layers[i] for i in range(n_cells)]))
    drawn = draw_figures(new, config=config, input_shape=input_shape)
    timings["write_s"] = time.perf_counter() - trained
    # After the figures, so that it can hold every timing; the manifest, of every file, after it.
    meta = {"input_shape": list(input_shape), "environment": environment(processes), "timings": timings,
            "compilation": work}  # fmt: skip
    if searched:
        meta["searched_grids"] = searched
    write_config(new, config, meta)
    tables = [METRICS, DIAGNOSTICS] if config.train.diagnostics_at else [METRICS]
    sign(new, [*tables, *(path.name for path in drawn), CONFIG])
    replace(out, new, OWNED, lock)


# The files of a results directory that normbench writes, which a replacing run does not carry over: its figures
# in every format that `normbench plot` draws.
FIGURE_FILES = {f"{name}.{format}" for name in {*FIGURES, *DIAGNOSTICS_FIGURES} for format in FORMATS}
OWNED = {CONFIG, METRICS, DIAGNOSTICS, "summary.md", REPORT, MANIFEST} | FIGURE_FILES


def environment(processes: int = 1) -> dict:
    """The machine, the packages and the command that computed a result; `processes`: the worker processes its
    cells trained in (`run_sweep`; 1: the command's own)."""
    device = jax.devices()[0]
    return {
        "normbench": __version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "device": f"{device.platform}: {device.device_kind}",
        "cpu": cpu(),
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "worker_processes": processes,
        "command": sys.argv,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# x86 vector extensions, widest first: XLA's CPU code uses the widest the host has.
VECTOR_EXTENSIONS = ("avx512f", "avx2", "avx", "sse4_2")


def cpu(path: Path = Path("/proc/cpuinfo")) -> str:
    """The host's processor, and on x86 the widest vector extension it has ("AMD EPYC, avx2"): XLA compiles for
    the host's instructions, so the last digits of a result computed on a CPU can differ between machines of the
    same software (docs/running.md, Determinism)."""
    fields = cpuinfo(path)
    name = fields.get("model name") or platform.processor() or platform.machine()  # else what platform knows
    flags = set(fields.get("flags", "").split())
    widest = next((extension for extension in VECTOR_EXTENSIONS if extension in flags), None)
    return f"{name}, {widest}" if widest else name


CHECKOUT = Path(__file__).resolve().parent.parent


def git_revision(root: Path = CHECKOUT) -> str | None:
    """The checkout's commit, with `-dirty` when it has uncommitted changes; None outside a checkout. Changes
    under `results/` do not count: a study writing its reference results there would mark itself."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
