"""`normbench bench`: where a sweep's time goes, against what this machine can do at best.

Every case prints a table and is saved as `<case>.csv`, all of them together as `bench.json`:

- `peak`: the machine's float32 matmul rate (large square products), the yardstick for every floor below (`cnn`
  measures it again beside each of its phase rows);
- `peers`: the same study as whole processes beside what a user would write instead, alternated: the naive Flax
  loop (`../shared/peers/flax_loop.py`, or `$NORMBENCH_PEERS/flax_loop.py`; skipped when absent) and the
  textbook's NumPy port, normbench run to each one's protocol, and the ratios issue 16 accepts on;
- `study`: the init-scale study with one seed, as a user runs it (`normbench run` in a fresh process), with an
  empty and then a warm compilation cache: the whole wall time and its phases, the training phase's matmul
  GFLOP/s and its ratio to the floor (FLOPs / peak), peak memory;
- `cnn`: the small-batch study's CNN cell (`configs/small_batch.py`, sgd; BN and GN at batch 128, BN at batch 2,
  one epoch of the peers' steps) beside a Python loop over its runs and steps in Flax and in PyTorch
  (`cnn_flax_loop.py`, `cnn_torch_loop.py --threads 1` beside `flax_loop.py`; each skipped when absent), whole
  processes alternated (normbench also with a process per core where the cell splits among them, and, for a norm
  with running statistics, without the evaluations after training that the peers do not do): the ratios
  issue 31 accepts on (`cnn_ratios`), and in this process each step's time alone,
  an evaluation's per image and run and the cell's time over its FLOP floor;
- `small_batch`: BatchNorm's cells of the small-batch study at batch 2 and 128 as the study trains them (the CNN,
  5 seeds x 4 rates, 15 epochs);
- `models`: one BatchNorm cell of the init-scale study with 1 ... 256 vmapped models (2 epochs): time per
  model-step and the program's memory, to show where vmapping stops paying;
- `loop`: the 32 runs of the init-scale study (one seed) vmapped, against a Python loop over single-run jitted
  programs of the same `train` function.

The alternated cases (`peers`, `cnn`) record before each row `trip_ns`, a value's round trip between the
machine's first two CPUs (`benchmarks/core_trip.py`): on the 2-core virtual machines measured it takes one of two
values, and work on both cores runs at two speeds with it (docs/performance.md).

FLOPs are the matrix products' and convolutions', counted from the program (`normbench.flops`); elementwise
work is not counted, so a ratio to the floor of 1 is out of reach by that margin.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import Config, apply_overrides, load_config
from normbench.core.budget import estimate
from normbench.core.grid import Cell, cells, plan
from normbench.core.sweep import compile_cell, device_data, run_sweep, train_program, training_time
from normbench.core.train import make_train, precision_scope
from normbench.data import load
from normbench.errors import UserError, refused_write
from normbench.norms import NORMS
from normbench.reports.progress import Progress
from normbench.results.store import atomic_write, make_writable
from normbench.runtime.cache import cache_dir

ROOT = Path(__file__).resolve().parent.parent
INIT_SCALE = ROOT / "configs" / "init_scale.py"
SMALL_BATCH = ROOT / "configs" / "small_batch.py"
CASES = ("peak", "study", "peers", "cnn", "small_batch", "models", "loop")
IN_PROCESS = ("small_batch", "models", "loop")  # the cases that compile cells in this process
CORE_TRIP = ROOT / "benchmarks" / "core_trip.py"


def run_bench(out: Path, cases: tuple[str, ...] | None = None, log=print, rounds: int = 1) -> dict:
    """Run `cases` (default: all), print a table for each, and write them under `out`. `rounds`: how many times
    the `peers` and `cnn` cases alternate their processes; their ratios then end with their median over the
    rounds."""
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    cases = cases or CASES
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise UserError(f"unknown bench case {unknown[0]!r}; valid cases: {', '.join(CASES)}")
    out = Path(out)
    try:
        make_writable(out)  # before the first case spends its minutes
    except OSError as e:
        raise refused_write(f"cannot write the bench's tables to {str(out)!r}", e) from None
    device = jax.devices()[0]
    report = {"device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__, "cases": {}}
    peak = measure_peak()
    log(f"{report['device']}, jax {jax.__version__}")
    for case in cases:
        if case == "peak":
            rows = [{"peak_gflops": round(peak, 1)}]
        elif case in IN_PROCESS:
            with _compiling_afresh():
                rows = CASE_FUNCTIONS[case](peak, log)
        else:
            rows = CASE_FUNCTIONS[case](peak, log, **({"rounds": rounds} if case in ALTERNATED else {}))
        report["cases"][case] = rows
        log(f"\n{case}\n{format_table(rows)}")
        atomic_write(out / f"{case}.csv", _csv(rows))
        if case in RATIOS and rows:
            name, ratios_of, accepts = RATIOS[case]
            ratios = report["cases"][name] = ratios_of(rows)
            log(f"\n{name.replace('_', ' ')} ({accepts})\n{format_table(ratios)}")
            atomic_write(out / f"{name}.csv", _csv(ratios))
    report["peak_gflops"] = peak
    atomic_write(out / "bench.json", json.dumps(report, indent=2) + "\n")
    return report


@contextlib.contextmanager
def _compiling_afresh():
    """Programs kept by an earlier run (or an earlier row) would make a row's compile_s a loading time: with
    the program cache off, every in-process case compiles its cells."""
    before = os.environ.get("NORMBENCH_COMPILATION_CACHE")
    os.environ["NORMBENCH_COMPILATION_CACHE"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NORMBENCH_COMPILATION_CACHE"]
        else:
            os.environ["NORMBENCH_COMPILATION_CACHE"] = before


def measure_peak(n: int = 2048, repeats: int = 10) -> float:
    """The best float32 GFLOP/s of an n x n matrix product."""
    a = jnp.ones((n, n), jnp.float32)
    product = jax.jit(jnp.matmul).lower(a, a).compile()
    product(a, a).block_until_ready()
    best = min(_timed(product, a, a) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn, *args) -> float:
    """Seconds until `fn(*args)` and every array it returns are done."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def core_trip_ns() -> int | None:
    """`benchmarks/core_trip.py` in a process of its own (it forks, which this one, running JAX's threads, must
    not): a value's round trip between this machine's first two CPUs in ns, None where there is one. On the 2-core
    virtual machines measured it tells which of two speeds work on both cores runs at, one half again the other
    (docs/performance.md); the alternated cases record it just before each row."""
    done = subprocess.run([sys.executable, str(CORE_TRIP)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{CORE_TRIP} failed:\n{done.stderr}")
    return None if done.stdout.strip() == "None" else int(done.stdout)


def study_case(peak: float, log) -> list[dict]:
    """`normbench run configs/init_scale.py`, one seed, in fresh processes: compilation cache cold, then warm."""
    config = load_config(INIT_SCALE)
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, seeds=(0,)))
    flops = sum(estimate(config, load(config.data), workers=1).cell_flops)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache_with_data(Path(tmp), config)
        for cache_state in ("cold", "warm"):
            wall, memory, saved = _normbench_process(Path(tmp), cache, ["sweep.seeds=0,"])
            t = saved["timings"]
            rows.append({
                "compilation_cache": cache_state,
                "wall_s": round(wall, 2),
                "imports_s": round(wall - sum(t.values()), 2),
                "data_s": round(t["data_s"], 2),
                "trace_s": round(saved["compilation"]["trace_s"], 2),
                "xla_compile_s": round(saved["compilation"]["xla_compile_s"], 2),
                "compile_wait_s": round(t["compile_s"], 2),
                "train_s": round(t["train_s"], 2),
                "write_s": round(t["write_s"], 2),
                "gflop": round(flops / 1e9, 1),
                "train_gflops": round(flops / t["train_s"] / 1e9, 1),
                "floor_s": round(flops / peak / 1e9, 2),
                "train_over_floor": round(t["train_s"] / (flops / peak / 1e9), 2),
                "peak_rss_mib": round(memory),
            })  # fmt: skip
    return rows


# What the peers compute, as normbench overrides of configs/init_scale.py (one seed, 32 runs):
# `flax_loop.py --mode naive` trains the textbook's 191 steps in float32 (batches with replacement, running
# statistics from 0, train accuracy after steps 1, 11, ..., 191); `benchmarks/textbook_numpy.py` trains 20 epochs
# of 10 steps (200) in float64, train accuracy after each.
FLAX_PROTOCOL = ["sweep.seeds=0,", "train.precision=float32"]
NUMPY_PROTOCOL = ["sweep.seeds=0,", "train.first_epoch_steps=none"]
# Where `normbench bench` looks for the shared peers (`flax_loop.py`); `NORMBENCH_PEERS` moves it.
PEERS = ROOT.parent / "shared" / "peers"


def peers_case(peak: float, log, rounds: int = 1) -> list[dict]:
    """Whole processes, alternated: `normbench run` of the init-scale study with one seed, caches cold then warm,
    against what a user would write instead, each run to match its protocol: the naive Flax loop (a Python loop
    over runs and over a jitted step; no persistent cache, so cold every time) and the textbook's NumPy port.
    The acceptance ratios of issue 16 come from these rows (`peer_ratios`)."""
    peers = Path(os.environ.get("NORMBENCH_PEERS") or PEERS)
    flax_loop = peers / "flax_loop.py"
    config = load_config(INIT_SCALE)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for protocol, peer, command in (
                (FLAX_PROTOCOL, "naive Flax loop", [str(flax_loop), "--mode", "naive", "--repeat", "1", "--out", tmp]),
                (NUMPY_PROTOCOL, "textbook NumPy", [str(ROOT / "benchmarks" / "textbook_numpy.py"), "--seeds", "1"]),
            ):
                if peer == "naive Flax loop" and not flax_loop.exists():
                    if round_ == 0:
                        log(f"peers: skipping the naive Flax loop: {flax_loop} is absent (set NORMBENCH_PEERS)")
                    continue
                here = Path(tmp) / f"{round_}-{peer}"
                cache = _cache_with_data(here, config)
                for cache_state in ("cold", "warm"):
                    trip = core_trip_ns()
                    wall, _, saved = _normbench_process(here, cache, protocol)
                    t = saved["timings"]
                    rows.append({"round": round_, "what": f"normbench, caches {cache_state}", "trip_ns": trip,
                                 "protocol": " ".join(protocol), "wall_s": round(wall, 2),
                                 "train_s": round(t["train_s"], 2)})  # fmt: skip
                trip = core_trip_ns()
                wall, _ = _process([sys.executable, *command], dict(os.environ))
                rows.append({"round": round_, "what": peer, "trip_ns": trip, "protocol": "its own",
                             "wall_s": round(wall, 2)})  # fmt: skip
    return rows


def peer_ratios(rows: list[dict]) -> list[dict]:
    """The ratios issue 16 accepts on, per round: normbench's whole process over the peer's (cold, warm), and
    normbench's warm fixed costs (all but training) over its training."""
    out = []
    for round_ in sorted({row["round"] for row in rows}):
        these = [row for row in rows if row["round"] == round_]
        for protocol, peer in (
            (" ".join(FLAX_PROTOCOL), "naive Flax loop"),
            (" ".join(NUMPY_PROTOCOL), "textbook NumPy"),
        ):
            mine = {row["what"]: row for row in these if row["protocol"] == protocol}
            theirs = [row["wall_s"] for row in these if row["what"] == peer]
            if not theirs or not mine:
                continue
            cold, warm = mine["normbench, caches cold"], mine["normbench, caches warm"]
            fixed = warm["wall_s"] - warm["train_s"]
            out.append({"round": round_, "peer": peer, "peer_wall_s": theirs[0],
                        "cold_over_peer": round(cold["wall_s"] / theirs[0], 2),
                        "warm_over_peer": round(warm["wall_s"] / theirs[0], 2),
                        "warm_fixed_over_train": round(fixed / warm["train_s"], 2)})  # fmt: skip
    rounds = {row["round"] for row in out}
    if len(rounds) > 1:  # one shared machine's rounds spread by a quarter: the median is the measurement
        ratios = ("peer_wall_s", "cold_over_peer", "warm_over_peer", "warm_fixed_over_train")
        for peer in dict.fromkeys(row["peer"] for row in out):
            these = [row for row in out if row["peer"] == peer]
            out.append({"round": f"median of {len(these)}", "peer": peer,
                        **{k: round(float(np.median([row[k] for row in these])), 2) for k in ratios}})  # fmt: skip
    return out


@dataclasses.dataclass(frozen=True)
class CnnCell:
    """One cell of `configs/small_batch.py` (sgd) as the CNN peers train it: `runs` runs, run k with seed k // 4
    and the study's k % 4-th rate, each `steps` steps of `batch` images in one epoch; `peers` are the loops
    it is timed against."""

    norm: str
    batch: int
    runs: int
    steps: int
    peers: tuple[str, ...] = ("Flax loop", "PyTorch loop")

    @property
    def label(self) -> str:
        return f"{self.norm} norm, batch {self.batch}, {self.runs} runs x {self.steps} steps"

    def overrides(self, n_train: int, steps: int | None = None) -> list[str]:
        """normbench's `--set`s for the peers' grid (4 rates a seed, so runs / 4 seeds) and `steps` (default: the
        cell's) in one epoch of `n_train` training images: within one pass as a step count, beyond it as whole
        passes (`train.min_steps`, rounded up to them). The grid alone, as the peers train it: the study's tuning
        would train more rates where the best sits at an edge of the grid (`report.tune_extensions`)."""
        steps = steps or self.steps
        seeds = ",".join(str(seed) for seed in range(self.runs // len(PEER_RATES)))
        within = steps <= n_train // self.batch
        epoch = [f"train.steps_per_epoch={steps}", "train.min_steps=none"] if within else [f"train.min_steps={steps}"]
        return [f"sweep.norms={self.norm},", "sweep.protocols=sgd,", f"sweep.batch_sizes={self.batch},",
                f"sweep.seeds={seeds},", "train.epochs=1", *epoch, "report.tune_extensions=0"]  # fmt: skip

    def peer_arguments(self) -> list[str]:
        return ["--norm", self.norm, "--batch", str(self.batch), "--runs", str(self.runs), "--steps", str(self.steps)]


# The peers' rates (r x batch / 256), the study's, which they cycle through run by run.
PEER_RATES = (0.8, 1.6, 3.2, 6.4)
# Issue 31's cells: BN and GN at batch 128 (506 steps: 22 passes of 23 batches, what min_steps=500 makes of the
# study's 4 passes an epoch), BN at batch 2 for one pass (1,500 steps), at 8 runs and at 40; at 40 the
# acceptance asks only about the Flax loop, and eager PyTorch would take longer than the rest of the round.
CNN_CELLS = (
    CnnCell("batch", 128, 8, 506),
    CnnCell("group", 128, 8, 506),
    CnnCell("batch", 2, 8, 1500),
    CnnCell("batch", 2, 40, 1500, peers=("Flax loop",)),
)
CNN_PEERS = {"Flax loop": ("cnn_flax_loop.py", "us_per_step_after_first", []),
             "PyTorch loop": ("cnn_torch_loop.py", "us_per_step", ["--threads", "1"])}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class HowRun:
    """How the CNN case runs a cell's normbench processes: `row` names them in the table, `ratio_prefix` in the
    ratios; `options` and `overrides` are their command line's."""

    words: str
    ratio_prefix: str
    options: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    cache_states: tuple[str, ...] = ("cold", "warm")

    def row(self, cache_state: str) -> str:
        return f"normbench, {self.words}caches {cache_state}"


# As `run` trains by default; in one process; and without the evaluations after training, which the peers do
# not do (`train.after_training`): cold only, the case where they cost the most.
BY_DEFAULT = HowRun("", "")
IN_ONE_PROCESS = HowRun("1 process, ", "one_process_", options=("--processes", "1"))
WITHOUT_AFTER_TRAINING = HowRun("no evaluations after training, ", "bare_", overrides=("train.after_training=,",),
                                cache_states=("cold",))  # fmt: skip
HOW_RUNS = (BY_DEFAULT, IN_ONE_PROCESS, WITHOUT_AFTER_TRAINING)


def cnn_case(peak: float, log, rounds: int = 1) -> list[dict]:
    """Each of `CNN_CELLS`, round after round: `normbench run configs/small_batch.py` to the cell's grid in fresh
    processes, caches cold then warm, as `run` trains by default (`--processes auto`: `processes` is how many
    processes it chose, `normbench.core.sweep.auto_processes`), and where that was more than one, again in one
    process; for a norm with running statistics, cold without its evaluations after training (BN's batch
    statistics, PreciseBN and example weighting: `train.after_training`), the peers' work but for the training
    and validation sets' accuracy; the cell's phases timed in this process (`cnn_phase_row`), with the matmul peak
    measured just before them (the floors' yardstick, `cnn_ratios`, rather than the run's first `peak`), then
    each peer as a whole process (its compiles are cold every time: it keeps no cache). The peers' data is decoded
    once beforehand, as normbench's is (`_cache_with_data`)."""
    peers = _present_peers(Path(os.environ.get("NORMBENCH_PEERS") or PEERS), log)
    study = load_config(SMALL_BATCH)
    n_train = len(load(study.data).train_x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        peer_data = Path(tmp) / "peer_data.npz"
        if peers:
            untimed = [*next(iter(peers.values())), "--runs", "1", "--steps", "2", "--data-cache", str(peer_data)]
            _process(untimed, _peer_env())
        for round_ in range(rounds):
            for cell in CNN_CELLS:
                here = Path(tmp) / f"{round_}-{cell.norm}-{cell.batch}-{cell.runs}"
                default = _cnn_normbench_rows(here, study, cell, n_train, BY_DEFAULT)
                rows += [{"round": round_, **row} for row in default]
                if default[0]["processes"] > 1:
                    one = _cnn_normbench_rows(here / "one process", study, cell, n_train, IN_ONE_PROCESS)
                    rows += [{"round": round_, **row} for row in one]
                if NORMS[cell.norm].running_stats:
                    bare = _cnn_normbench_rows(here / "bare", study, cell, n_train, WITHOUT_AFTER_TRAINING)
                    rows += [{"round": round_, **row} for row in bare]
                trip, row_peak = core_trip_ns(), measure_peak()
                with _compiling_afresh():
                    phases = cnn_phase_row(study, cell)
                rows.append({"round": round_, "cell": cell.label, "what": "normbench, in process", "trip_ns": trip,
                             "peak_gflops": round(row_peak, 1), **phases})  # fmt: skip
                for peer in (name for name in cell.peers if name in peers):
                    result = Path(tmp) / "peer" / f"{round_}-{peer}"
                    command = [*peers[peer], *cell.peer_arguments(), "--out", str(result)]
                    trip = core_trip_ns()
                    wall, _ = _process([*command, "--data-cache", str(peer_data)], _peer_env())
                    timing = json.loads((result / "result.json").read_text())["timing"]
                    rows.append({"round": round_, "cell": cell.label, "what": peer, "trip_ns": trip,
                                 "wall_s": round(wall, 2),
                                 "us_per_model_step": round(timing[CNN_PEERS[peer][1]], 1)})  # fmt: skip
                # A line as each cell ends: the case's table comes at its end, and a stopped run keeps these.
                timed = "; ".join(f"{row['what']} {row['wall_s']} s" for row in rows if "wall_s" in row
                                      and (row["round"], row["cell"]) == (round_, cell.label))  # fmt: skip
                log(f"cnn: round {round_}, {cell.label}: {timed}")
    return rows


def _cnn_normbench_rows(tmp: Path, study: Config, cell: CnnCell, n_train: int, how: HowRun) -> list[dict]:
    """`cell` by `normbench run` in fresh processes, run `how` says, at each of its cache states."""
    cache = _cache_with_data(tmp, study)
    rows = []
    for cache_state in how.cache_states:
        trip = core_trip_ns()
        wall, _, saved = _normbench_process(tmp, cache, cell.overrides(n_train) + list(how.overrides), SMALL_BATCH,
                                            how.options)  # fmt: skip
        rows.append({"cell": cell.label, "what": how.row(cache_state), "trip_ns": trip,
                     "processes": saved["environment"]["worker_processes"], "wall_s": round(wall, 2),
                     "train_s": round(saved["timings"]["train_s"], 2)})  # fmt: skip
    return rows


def _present_peers(folder: Path, log) -> dict[str, list[str]]:
    """{peer: the command that runs it} for the CNN peers this machine can run; a line for each it cannot."""
    present = {}
    for peer, (script, _, options) in CNN_PEERS.items():
        if not (folder / script).exists():
            log(f"cnn: skipping the {peer}: {folder / script} is absent (set NORMBENCH_PEERS)")
        elif peer == "PyTorch loop" and importlib.util.find_spec("torch") is None:
            log("cnn: skipping the PyTorch loop: torch is not installed")
        elif peer == "PyTorch loop" and jax.default_backend() != "cpu":
            log(f"cnn: skipping the PyTorch loop: it trains on the CPU, and normbench here on {jax.default_backend()}")
        else:
            present[peer] = [sys.executable, str(folder / script), *options]
    return present


def _peer_env() -> dict:
    """The peers keep no compiled programs between processes, unless the user's environment names a cache."""
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def cnn_phase_row(study: Config, cnn_cell: CnnCell) -> dict:
    """`cnn_cell` of `study` timed phase by phase, each program compiled afresh: the epoch at the cell's steps and
    at about a quarter of them, whose difference is the steps' own time (the epoch's evaluations, the same in both,
    cancel), and an epoch of one step, nearly all of it evaluations, of the training, test and validation sets
    once each (the one epoch is the last, so held-out sets are due). The evaluations are that epoch less its step:
    what remains of the whole epoch instead is a small difference of two large times, which one round's noise
    swamped at batch 128. An evaluation per image and run is set beside a training example's step (a step over its
    batch); the whole cell's time (start, epoch and finish) and its matrix products' GFLOP are kept for its FLOP
    floor, which `cnn_ratios` takes at the best peak of the run."""
    dataset = load(study.data)
    n_train = len(dataset.train_x)
    config = apply_overrides(study, cnn_cell.overrides(n_train))
    fewer = apply_overrides(study, cnn_cell.overrides(n_train, steps=max(1, cnn_cell.steps // 4)))
    (cell,) = cells(config)
    one_step = apply_overrides(study, cnn_cell.overrides(n_train, steps=1))
    whole, (epoch, fewer_epoch, one_step_epoch) = _phase_seconds([config, fewer, one_step], cell)
    cell_plan = plan(config, cell)
    runs, steps = cell_plan.run_count, cell_plan.steps(n_train).per_run
    step_s = (epoch - fewer_epoch) / ((steps - plan(fewer, cell).steps(n_train).per_run) * runs)
    evaluated = n_train + len(dataset.test_x) + len(dataset.validation()[0])
    eval_s = (one_step_epoch - runs * step_s) / (evaluated * runs)
    return {
        "us_per_model_step": round(step_s * 1e6, 1),
        "eval_us_per_image_run": round(eval_s * 1e6, 2),
        "eval_over_train_example": round(eval_s / (step_s / cell.batch_size), 2),
        "train_s": round(whole, 3),
        "gflop": round(_cell_flops(config, cell) / 1e9, 3),
    }


def _phase_seconds(configs: list[Config], cell: Cell, repeats: int = 3) -> tuple[float, list[float]]:
    """(start + epoch + finish of the first of `configs`, each one's epoch alone) in seconds: one epoch of `cell` as
    each config has it, compiled here, the fastest of `repeats` runs of it (a fresh program's first run also pays for
    its buffers and threads). The runs take turns, config after config, so that the machine's two speeds, which
    switch every few seconds to tens of seconds (docs/performance.md), fall on each config alike: run back to back,
    one config's fastest could come at one speed and another's at the other, and their difference mix the two."""
    dataset, precision = load(configs[0].data), configs[0].train.precision
    with precision_scope(precision):
        data = device_data(dataset, precision)
        compiled, states, start_s = [], [], []
        for config in configs:
            seeds, values = plan(config, cell).arrays()
            phases = compile_cell(config, cell, dataset, data).phases
            began = time.perf_counter()
            states.append(jax.block_until_ready(phases.start(seeds, values, data)))
            start_s.append(time.perf_counter() - began)
            compiled.append((phases, seeds, values))
        epoch_s = [math.inf] * len(configs)
        for _ in range(repeats):
            for i, (phases, seeds, values) in enumerate(compiled):
                began = time.perf_counter()
                states[i] = jax.block_until_ready(phases.epoch(seeds, values, data, states[i], np.int32(0)))[0]
                epoch_s[i] = min(epoch_s[i], time.perf_counter() - began)
        phases, seeds, values = compiled[0]
        began = time.perf_counter()
        jax.block_until_ready(phases.finish(seeds, values, data, states[0]))
    return start_s[0] + epoch_s[0] + time.perf_counter() - began, epoch_s


def cnn_ratios(rows: list[dict]) -> list[dict]:
    """The ratios issue 31 accepts on, per round, cell and peer: normbench's whole process over the peer's, as
    `run` trains by default in `processes` processes (caches cold, warm) and, where that was more than one, in
    one process (`one_process_*`, None elsewhere), cold without the evaluations after training where its norm
    has them (`bare_cold_over_peer`, None elsewhere), and its step over the peer's; and, per cell, an evaluation per
    image and run over a training example's step and the cell's time over its FLOP floor. The floor is at the
    highest matmul peak measured beside the run's phase rows: a peak taken once can fall at the slower of the
    machine's two speeds (docs/performance.md), which flatters every ratio to it (at 2cfcd63 the bench's one
    peak, at its start, was 137 GFLOP/s, where the same machine measured 177-190 idle that hour). Several rounds end
    with each one's median."""
    out = []
    best_peak = max((row["peak_gflops"] for row in rows if row["what"] == "normbench, in process"), default=None)
    for (round_, cell), these in _grouped(rows, ("round", "cell")).items():
        phases = next(row for row in these if row["what"] == "normbench, in process")
        timed = {row["what"]: row for row in these if "processes" in row}
        default = timed[BY_DEFAULT.row("cold")]
        for peer in (row for row in these if row["what"] in CNN_PEERS):
            over = {f"{how.ratio_prefix}{state}_over_peer":
                    round(timed[what]["wall_s"] / peer["wall_s"], 2) if (what := how.row(state)) in timed else None
                    for how in HOW_RUNS for state in how.cache_states}  # fmt: skip
            out.append({"round": round_, "cell": cell, "peer": peer["what"], "peer_wall_s": peer["wall_s"],
                        "processes": default["processes"], **over,
                        "step_over_peer": round(phases["us_per_model_step"] / peer["us_per_model_step"], 2),
                        "eval_over_train_example": phases["eval_over_train_example"],
                        "train_over_floor": round(phases["train_s"] / (phases["gflop"] / best_peak), 2)})  # fmt: skip
    if len({row["round"] for row in out}) > 1:
        ratios = [key for key in out[0] if key not in ("round", "cell", "peer", "processes")]
        for (cell, peer), these in _grouped(out, ("cell", "peer")).items():
            out.append({"round": f"median of {len(these)}", "cell": cell, "peer": peer,
                        "processes": "/".join(sorted({str(row["processes"]) for row in these})),
                        **{k: _median([row[k] for row in these]) for k in ratios}})  # fmt: skip
    return out


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return round(float(np.median(present)), 2) if present else None


def _grouped(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """The rows by their values of `keys`, in the order each combination first appears."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups


def _cache_with_data(tmp: Path, config: Config) -> Path:
    """An empty cache but for the decoded data, which is cached once per machine (`normbench.data`)."""
    cache = tmp / "cache"
    cache.mkdir(parents=True)
    load(config.data)
    for npz in cache_dir().glob("*.npz"):
        shutil.copy(npz, cache)
    return cache


def _normbench_process(tmp: Path, cache: Path, overrides: list[str], study: Path = INIT_SCALE, options=()):
    """`normbench run <study> --set ... <options>` in a fresh process with its caches in `cache`: (wall seconds,
    peak memory in MiB, the config.json it wrote)."""
    command = [sys.executable, "-m", "normbench", "run", str(study), *(f"--set={o}" for o in overrides),
               "--out", str(tmp / "out"), "--force", *options]  # fmt: skip
    # Caches cold, then warm, only as `cache` is: none that the user's environment names, none turned off.
    env = {**os.environ, "NORMBENCH_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("NORMBENCH_COMPILATION_CACHE", None)
    wall, memory = _process(command, env)
    return wall, memory, json.loads((tmp / "out" / "config.json").read_text())


def _process(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak memory in MiB) of a process from its start to its exit."""
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()}")
    return wall, usage.ru_maxrss / 1024


def small_batch_case(peak: float, log) -> list[dict]:
    config = small_batch_config()
    return [_cell_row(config, cell, peak) for cell in cells(config)]


def small_batch_config() -> Config:
    """`configs/small_batch.py`'s BatchNorm cells at its smallest and largest batch, each as the study trains it."""
    config = load_config(SMALL_BATCH)
    sizes = (min(config.sweep.batch_sizes), max(config.sweep.batch_sizes))
    return dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, norms=("batch",), batch_sizes=sizes))


# The models and loop cases ask how vmapping scales on this device, in float32 (the peers' precision and the
# default); the init-scale study's own float64 would only halve every row's rate.
FLOAT32 = {"precision": "float32"}


def models_case(peak: float, log, counts=(1, 4, 16, 64, 256)) -> list[dict]:
    base = load_config(INIT_SCALE)
    rows = []
    for count in counts:
        sweep = dataclasses.replace(
            base.sweep, seeds=(0,), init_scales=tuple(float(s) for s in np.logspace(0, -4, count))
        )
        config = dataclasses.replace(base, sweep=sweep, train=dataclasses.replace(base.train, epochs=2, **FLOAT32))
        rows.append(_cell_row(config, Cell("mlp", "batch", "sgd", 100), peak, models=count))
    return rows


def loop_case(peak: float, log) -> list[dict]:
    """The 32 runs (16 scales x batch/none, one seed): one vmapped program per norm, or a loop of single runs,
    cell after cell; and the vmapped cells as `normbench run` trains them on a CPU, two at a time."""
    config = load_config(INIT_SCALE)
    config = dataclasses.replace(
        config, sweep=dataclasses.replace(config.sweep, seeds=(0,)), train=dataclasses.replace(config.train, **FLOAT32)
    )
    dataset = load(config.data)
    data = device_data(dataset, config.train.precision)
    rows = []
    for how in ("vmapped", "loop"):
        compile_s = train_s = 0.0
        for cell in cells(config):
            seeds, values = plan(config, cell).arrays()
            start = time.perf_counter()
            if how == "vmapped":
                program = compile_cell(config, cell, dataset, data)
                compile_s += time.perf_counter() - start
                train_s += _timed(train_program, program, config, cell, data)
                continue
            train = jax.jit(make_train(config, cell, dataset.num_classes, len(dataset.train_x)))
            single = train.lower(seeds[0], {k: v[0] for k, v in values.items()}, data).compile()
            compile_s += time.perf_counter() - start
            for k in range(len(values["init_scale"])):
                train_s += _timed(single, seeds[0], {key: v[k] for key, v in values.items()}, data)
        rows.append({"how": how, "runs": 32, "compile_s": round(compile_s, 2), "train_s": round(train_s, 2),
                     "total_s": round(compile_s + train_s, 2)})  # fmt: skip
    start = time.perf_counter()
    results = run_sweep(config, dataset, Progress(), workers=2)
    total = time.perf_counter() - start
    busy = training_time(results)
    rows.append({"how": "vmapped, 2 cells at a time", "runs": 32, "compile_s": round(total - busy, 2),
                 "train_s": round(busy, 2), "total_s": round(total, 2)})  # fmt: skip
    for row in rows:
        row["speedup_vs_loop"] = round(rows[1]["total_s"] / row["total_s"], 2)
    return rows


CASE_FUNCTIONS = {
    "study": study_case,
    "peers": peers_case,
    "cnn": cnn_case,
    "small_batch": small_batch_case,
    "models": models_case,
    "loop": loop_case,
}
ALTERNATED = ("peers", "cnn")  # the cases whose processes alternate `rounds` times
# case: (its ratios' table, how they are computed from its rows, what the issue behind them accepts)
RATIOS = {
    "peers": ("peer_ratios", peer_ratios, "issue 16 accepts cold <= 0.8 and warm <= 0.35 of the naive Flax loop, "
              "warm fixed costs <= 0.3 of training"),
    "cnn": ("cnn_ratios", cnn_ratios, "issue 31 accepts, at batch 128: step <= 0.9 of the faster loop's, cold <= 1.0, "
            "warm <= 0.9, train over floor <= 4.5; at batch 2, of the Flax loop: cold <= 1.0, warm <= 0.6, step "
            "<= 0.5 at 8 runs and <= 0.4 at 40; everywhere an evaluation per image and run <= 1/3 of a training "
            "example's step"),
}  # fmt: skip


def _cell_flops(config: Config, cell: Cell) -> int:
    """What one cell computes, as the run's estimate counts it (`normbench.core.budget`): steps, evaluations
    and the held-out ones each counted as often as they run."""
    return estimate(config, load(config.data), workers=1).cell_flops[cells(config).index(cell)]


def _cell_row(config: Config, cell: Cell, peak: float, **extra) -> dict:
    """Compile one cell, train it twice, and time the second (the first also pays for warming up)."""
    dataset = load(config.data)
    seeds, values = plan(config, cell).arrays()
    with precision_scope(config.train.precision):
        data = device_data(dataset, config.train.precision)
        start = time.perf_counter()
        program = compile_cell(config, cell, dataset, data)
        compile_s = time.perf_counter() - start
        jax.block_until_ready(train_program(program, config, cell, data)[0])
        train_s = _timed(train_program, program, config, cell, data)
    flops = _cell_flops(config, cell)
    models = len(seeds) * len(values["init_scale"])
    model_steps = models * config.train.epochs * plan(config, cell).steps(len(dataset.train_x)).per_epoch
    memory = program.memory_analysis()
    return {
        **extra,
        "batch": cell.batch_size,
        "models": models,
        "compile_s": round(compile_s, 2),
        "train_s": round(train_s, 3),
        "us_per_model_step": round(train_s / model_steps * 1e6, 1),
        "model_steps_per_s": round(model_steps / train_s),
        "gflop": round(flops / 1e9, 2),
        "gflops": round(flops / train_s / 1e9, 1),
        "train_over_floor": round(train_s / (flops / peak / 1e9), 2),
        "program_mib": round((memory.temp_size_in_bytes + memory.argument_size_in_bytes
                              + memory.output_size_in_bytes) / 2**20, 1),
    }  # fmt: skip


def format_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    table = [keys] + [[str(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(keys))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table)


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
