"""The `normbench` command: parse, resolve the config, call the library. Intentionally short: the logic lives in
modules that tests and notebooks import directly. JAX is imported only by the commands that need it, so
`normbench --help` answers at once.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import gc
import os
import signal
import sys
import time
from pathlib import Path

from normbench.api import default_out
from normbench.errors import MachineError, UserError

_STARTED = time.perf_counter()


def _resolve(args, diagnostics: bool = False):
    from normbench.config import apply_overrides, command_line, load_config
    from normbench.validate import validate

    config = command_line(load_config(args.config), args.set, args.sweep)
    if diagnostics and not config.train.diagnostics_at:
        config = apply_overrides(config, [f"train.diagnostics_at=0,1,{config.train.epochs}"])
    validate(config)
    return config


def _path(value: str | None, option: str) -> Path | None:
    """The path an option names, None where it is not given: an empty one is refused, not taken for not given."""
    if value == "":
        raise UserError(f"{option} is empty; name a path, or leave the option out")
    return None if value is None else Path(value)


def _processes(value: str) -> int | None:
    """`--processes`: a count, or `auto` (None), which `run_study` decides."""
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {value!r}") from None


def _warn_ignored(args, config) -> None:
    """Said once a command has succeeded, so that a failing one still ends in its one error line."""
    from normbench.validate import ignored_options

    for warning in ignored_options(config, [pair.partition("=")[0].strip() for pair in args.set]):
        print(f"normbench: warning: {warning}", file=sys.stderr)


def _run(args) -> int:
    if args.distributed or args.coordinator:
        from normbench.runtime.parallel import initialize  # before anything else touches a device

        initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.num_processes is not None or args.process_id is not None:
        raise UserError("--num-processes and --process-id describe a distributed run: add --coordinator HOST:PORT "
                        "(or --distributed)")  # fmt: skip
    out, tensorboard = _path(args.out, "--out"), _path(args.tensorboard, "--tensorboard")
    config = _resolve(args, args.diagnostics)
    out = out or default_out(config.name)
    from normbench.reports.progress import Fanout, console_progress
    from normbench.study import run_study

    # The imports leave many long-lived objects that every full garbage collection would walk again, for nothing:
    # frozen, the collector skips them.
    gc.freeze()
    listeners = []
    if tensorboard:
        from normbench.reports.tensorboard import TensorBoardWriter

        listeners.append(TensorBoardWriter(tensorboard))
    try:
        with console_progress(args.quiet) as progress:
            timings = run_study(config, out, Fanout(progress, *listeners), force=args.force, workers=args.workers,
                                size_check=not args.no_size_check, processes=args.processes)  # fmt: skip
    except KeyboardInterrupt:
        print(f"normbench: interrupted; finished cells are kept in {out}/unfinished: run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    if timings is None:
        print(f"{out}/ already holds the finished results of this config: nothing to train (--force trains it again)")
        return 0
    total = time.perf_counter() - _STARTED
    _warn_ignored(args, config)
    print(f"results in {out}/")
    print(
        f"wall time {total:.1f} s: start and imports {total - sum(timings.values()):.1f} + "
        + " + ".join(f"{k[:-2]} {v:.1f}" for k, v in timings.items())
    )
    return 0


def _show(args) -> int:
    from normbench.catalog import config_text
    from normbench.core.budget import estimate
    from normbench.core.grid import cells
    from normbench.core.sweep import auto_processes, check_fits, resolve_workers
    from normbench.data import DataError, load
    from normbench.results.tuning import extension_text
    from normbench.runtime.calibration import device_kind, last_rate

    config = _resolve(args)
    print(config_text(config))
    cost = None
    try:
        dataset = load(config.data)
    except DataError as e:  # the config is still worth reading; only its cost needs the data's shapes
        print(f"# memory and time not estimated: {e}")
    else:
        check_fits(config, dataset)
        cost = estimate(config, dataset, resolve_workers(args.workers), last_rate(device_kind()))
        print(f"# {cost.text()}")
        processes = auto_processes(config, cells(config), cost.train_seconds())
        if processes > 1:
            print(f"# run trains in {processes} worker processes, one per core (--processes 1: in one)")
    extensions = extension_text(config, cost)
    if extensions:
        print(f"# {extensions}")
    _warn_ignored(args, config)
    return 0


def _reading(command):
    """A command that reads results directories: what their reader says without refusing
    (`normbench.results.reader.ResultsWarning`) is said once the command has succeeded, one line each, as
    `_warn_ignored` does."""

    @functools.wraps(command)
    def read(args) -> int:
        import warnings

        from normbench.results.reader import ResultsWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResultsWarning)
            status = command(args)
        for warning in caught:
            if issubclass(warning.category, ResultsWarning):
                print(f"normbench: warning: {warning.message}", file=sys.stderr)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        return status

    return read


@_reading
def _plot(args) -> int:
    from normbench.reports.plots import redraw

    revised = None
    if args.config:
        from normbench.config import load_config
        from normbench.validate import validate

        revised = load_config(args.config)
        validate(revised)
    for path in redraw(Path(args.results_dir), args.format, args.dpi, args.trust_edits, revised):
        print(path)
    return 0


@_reading
def _report(args) -> int:
    from normbench.reports.report import write_report

    print(write_report(Path(args.results_dir), _path(args.output, "--output"), args.trust_edits))
    return 0


@_reading
def _compare(args) -> int:
    from normbench.reports.compare import check_figure_name, compare, compare_text, plot, read_sweeps, write_csv

    table, figure = _path(args.csv, "--csv"), _path(args.plot, "--plot")
    if figure:
        check_figure_name(figure)  # before the table is printed: a refused command prints only its error
    sweeps = read_sweeps(args.results_dirs, args.trust_edits)
    comparison = compare(sweeps, args.metric, every=args.all)
    print(compare_text(comparison))
    if table:
        print(write_csv(comparison, table))
    if figure:
        print(plot(sweeps, args.metric, figure))
    return 0


def _list(args) -> int:
    from normbench.catalog import listing

    print(listing(args.what))
    return 0


def _bench(args) -> int:
    from normbench.bench import run_bench

    out = _path(args.out, "--out")
    if out is None:
        import jax

        out = default_out("bench") / jax.devices()[0].device_kind.lower().replace(" ", "-")
    run_bench(Path(out), tuple(args.cases) if args.cases else None, rounds=args.rounds)
    print(f"\ntables in {out}/")
    return 0


def _scorecard(args) -> int:
    from normbench.reports.progress import console_progress
    from normbench.scoring.run import estimate_text, plan, run_scorecard

    out, norms = _path(args.out, "--out") or default_out("scorecard"), args.norms or None
    if args.show:
        print(estimate_text(plan(norms, out, args.quick), args.workers))
        return 0
    gc.freeze()  # as `run` does
    try:
        with console_progress(args.quiet) as progress:
            run_scorecard(norms, out, args.quick, progress, args.workers)
    except KeyboardInterrupt:
        print(f"normbench: interrupted; finished runs are kept in {out}: run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    print(f"scorecard in {out}/scorecard.md")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="normbench", description="Compare normalization schemes with vectorized JAX sweeps."
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every run of a study config and write its results directory")
    show = sub.add_parser("show", help="print a study config as it would run, after any --set")
    example = "e.g. --set train.epochs=5 --set sweep.norms=batch,layer"
    for command in (run, show):
        command.add_argument("config", help="a Python file under configs/ with get_config()")
        command.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help=f"override a config field, {example}"
        )
        command.add_argument(
            "--sweep",
            action="append",
            default=[],
            metavar="KEY=V1,V2",
            help="make a config field a sweep axis, e.g. --sweep norm.num_groups=1,2,4 (a metrics.csv column; "
            "vmapped where the field can be a traced value, one program per value elsewhere: see `normbench show`)",
        )
    run.add_argument("--out", help="results directory (default: runs/<config name>, git-ignored)")
    run.add_argument(
        "--force",
        action="store_true",
        help="train and replace results already there: another config's, or this config's finished ones",
    )
    run.add_argument(
        "--no-size-check",
        action="store_true",
        help="run a sweep whose estimated memory (printed by `normbench show`) exceeds the memory available",
    )
    for command in (run, show):
        command.add_argument(
            "--workers",
            type=int,
            metavar="N",
            help="cells trained at once (default: 2 on one CPU device, where they fill the cores; 1 elsewhere)",
        )
    run.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N|auto",
        help="train in N worker processes on one CPU, each pinned to a core, with the same results; a cell whose "
        "seeds train in chunks (train.chunk_size) is split among them. 1: in this process. Default auto: a "
        "process per core where cells train in chunks for 10 s or more (estimated), else 1",
    )
    run.add_argument(
        "--diagnostics",
        action="store_true",
        help="record per-layer activation statistics at init, after epoch 1 and after the last (unless the config "
        "sets train.diagnostics_at) into diagnostics.csv, with figures",
    )
    run.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run (jax.distributed.initialize): the sweep spreads over every process's "
        "devices, process 0 writes the results; the cluster's environment (SLURM, Open MPI, ...) or the three "
        "options below say who the processes are",
    )
    run.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (implies --distributed)")
    run.add_argument("--num-processes", type=int, metavar="N", help="with --distributed: how many processes")
    run.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process's index")
    run.add_argument("--quiet", action="store_true", help="plain log lines instead of the live progress bar")
    run.add_argument(
        "--tensorboard", metavar="DIR", help="also write each run's metrics as TensorBoard scalars as its epochs end"
    )
    run.set_defaults(func=_run)
    show.set_defaults(func=_show)
    plot = sub.add_parser("plot", help="redraw a results directory's figures and summary.md from its metrics.csv")
    plot.add_argument("results_dir")
    plot.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="file type of the figures")
    plot.add_argument("--dpi", type=int, default=110, help="resolution of PNG figures (default: 110)")
    plot.add_argument(
        "--config",
        metavar="FILE",
        help="first take the report and figures sections (claims, tuning, figures) from this config file, which "
        "must train the same runs as the directory's config.json: revise a study's claims without retraining",
    )
    plot.set_defaults(func=_plot)
    report = sub.add_parser("report", help="write a results directory's figures, tables and config as one HTML file")
    report.add_argument("results_dir")
    report.add_argument("--output", metavar="FILE", help="where to write it (default: RESULTS_DIR/report.html)")
    report.set_defaults(func=_report)
    comparing = sub.add_parser(
        "compare",
        help="line up the configurations of two or more results directories: each one's final metric as "
        "summary.md gives it (mean and 95%% interval over the runs that did not diverge, the diverged counted), "
        "and the paired difference from the first directory over the seeds both ran",
    )
    comparing.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR")
    comparing.add_argument(
        "--metric", default="test_acc", help="a metrics.csv column measured after the last epoch (default: test_acc)"
    )
    comparing.add_argument(
        "--all", action="store_true", help="every configuration any directory ran, not only those that all ran"
    )
    comparing.add_argument("--csv", metavar="FILE", help="also write the table, one row per configuration "
                           "and directory, to FILE")  # fmt: skip
    comparing.add_argument("--plot", metavar="FILE", help="also draw the comparison into FILE")
    comparing.set_defaults(func=_compare)
    for command in (plot, report, comparing):
        command.add_argument(
            "--trust-edits",
            action="store_true",
            help="read a config.json or metrics.csv that changed since its run wrote it (its manifest.json says "
            "so), instead of refusing it",
        )
    listing = sub.add_parser(
        "list", help="list the registered norms (with metadata), models, protocols, data sources or configs"
    )
    listing.add_argument("what", choices=("norms", "models", "protocols", "datasets", "configs"))
    listing.set_defaults(func=_list)
    bench = sub.add_parser("bench", help="time the studies against this machine's matmul peak, print the tables")
    bench.add_argument("--out", help="where the tables go (default: runs/bench/<device kind>, git-ignored)")
    bench.add_argument("--cases", nargs="+", help="some of: peak study peers cnn small_batch models loop (all)")
    bench.add_argument(
        "--rounds", type=int, default=1, help="peers, cnn: alternate processes this many times; ratios end in medians"
    )
    bench.set_defaults(func=_bench)
    card = sub.add_parser(
        "scorecard",
        help="put norms through one battery of small tests (init scale, small batch, CNN, ViT, cost) and write "
        "scorecard.md/.csv/.png: each mean with its 95%% interval, paired against BatchNorm and LayerNorm",
    )
    card.add_argument("norms", nargs="*", metavar="NORM", help="norms to score (default: every registered one)")
    card.add_argument("--out", help="its directory (default: runs/scorecard); runs already there are not repeated")
    card.add_argument("--quick", action="store_true", help="the tiny battery: tests the machinery in seconds")
    card.add_argument("--show", action="store_true", help="print what it would train and its time, and stop")
    card.add_argument("--workers", type=int, metavar="N", help="cells trained at once, as for `run`")
    card.add_argument("--quiet", action="store_true", help="plain log lines instead of the live progress bar")
    card.set_defaults(func=_scorecard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # A SIGTERM (a scheduler's stop, `kill`) ends a command the way Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args)
    except UserError as e:
        print(f"normbench: error: {e}", file=sys.stderr)
        return 2
    except MachineError as e:
        print(f"normbench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("normbench: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def command() -> None:
    """The `normbench` executable: `main`, then a quick exit. After a run, Python's slow teardown of JAX, XLA
    and every imported module does nothing a user needs: every result is written and closed and no other thread
    is left, so the exit handlers (JAX's, logging's) run and the process ends without the teardown."""
    status = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    command()
