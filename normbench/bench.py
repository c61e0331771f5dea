"""`normbench bench`: where a sweep's time goes, against what this machine can do at best.

Every case prints a table and is saved as `<case>.csv`, all of them together as `bench.json`:

- `peak`: the machine's float32 matmul rate (large square products), the yardstick for every floor below;
- `peers`: the same study as whole processes beside what a user would write instead, alternated: the naive Flax
  loop (`../shared/peers/flax_loop.py`, or `$NORMBENCH_PEERS/flax_loop.py`; skipped when absent) and the
  textbook's NumPy port, normbench run to each one's protocol, and the ratios issue 16 accepts on;
- `study`: the init-scale study with one seed, as a user runs it (`normbench run` in a fresh process), with an
  empty and then a warm compilation cache: the whole wall time and its phases, the training phase's matmul
  GFLOP/s and its ratio to the floor (FLOPs / peak), peak memory;
- `small_batch`: one cell of the small-batch study (MLP, BatchNorm, 5 seeds, 8 epochs) at batch 2 and 128;
- `models`: one BatchNorm cell of the init-scale study with 1 ... 256 vmapped models (2 epochs): time per
  model-step and the program's memory, to show where vmapping stops paying;
- `loop`: the 32 runs of the init-scale study (one seed) vmapped, against a Python loop over single-run jitted
  programs of the same `train` function.

FLOPs are the matrix products' and convolutions', counted from the program (`normbench.flops`); elementwise
work is not counted, so a ratio to the floor of 1 is out of reach by that margin.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
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

from normbench.config import Config, load_config
from normbench.core.budget import estimate
from normbench.core.grid import Cell, cells, grid_arrays, steps_per_epoch
from normbench.core.sweep import compile_cell, device_data, run_sweep, train_program, training_time
from normbench.core.train import make_train, precision_scope
from normbench.data import load
from normbench.errors import UserError
from normbench.reports.progress import Progress
from normbench.results.store import atomic_write
from normbench.runtime.cache import cache_dir

ROOT = Path(__file__).resolve().parent.parent
CASES = ("peak", "study", "peers", "small_batch", "models", "loop")
IN_PROCESS = ("small_batch", "models", "loop")  # the cases that compile cells in this process


def run_bench(out: Path, cases: tuple[str, ...] | None = None, log=print, rounds: int = 1) -> dict:
    """Run `cases` (default: all), print a table for each, and write them under `out`. `rounds`: how many times
    the `peers` case alternates its processes; its ratios then end with their median over the rounds."""
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    cases = cases or CASES
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise UserError(f"unknown bench case {unknown[0]!r}; valid cases: {', '.join(CASES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
            rows = CASE_FUNCTIONS[case](peak, log, **({"rounds": rounds} if case == "peers" else {}))
        report["cases"][case] = rows
        log(f"\n{case}\n{format_table(rows)}")
        atomic_write(out / f"{case}.csv", _csv(rows))
        if case == "peers" and rows:
            ratios = report["cases"]["peer_ratios"] = peer_ratios(rows)
            log(
                f"\npeer ratios (issue 16 accepts cold <= 0.8 and warm <= 0.35 of the naive Flax loop, warm fixed "
                f"costs <= 0.3 of training)\n{format_table(ratios)}"
            )
            atomic_write(out / "peer_ratios.csv", _csv(ratios))
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


def study_case(peak: float, log) -> list[dict]:
    """`normbench run configs/init_scale.py`, one seed, in fresh processes: compilation cache cold, then warm."""
    config = load_config(ROOT / "configs" / "init_scale.py")
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
    config = load_config(ROOT / "configs" / "init_scale.py")
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
                    wall, _, saved = _normbench_process(here, cache, protocol)
                    t = saved["timings"]
                    rows.append({"round": round_, "what": f"normbench, caches {cache_state}",
                                 "protocol": " ".join(protocol), "wall_s": round(wall, 2),
                                 "train_s": round(t["train_s"], 2)})  # fmt: skip
                wall, _ = _process([sys.executable, *command], dict(os.environ))
                rows.append({"round": round_, "what": peer, "protocol": "its own", "wall_s": round(wall, 2)})
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


def _cache_with_data(tmp: Path, config: Config) -> Path:
    """An empty cache but for the decoded data, which is cached once per machine (`normbench.data`)."""
    cache = tmp / "cache"
    cache.mkdir(parents=True)
    load(config.data)
    for npz in cache_dir().glob("*.npz"):
        shutil.copy(npz, cache)
    return cache


def _normbench_process(tmp: Path, cache: Path, overrides: list[str]) -> tuple[float, float, dict]:
    """`normbench run configs/init_scale.py --set ...` in a fresh process with its caches in `cache`: (wall
    seconds, peak memory in MiB, the config.json it wrote)."""
    command = [sys.executable, "-m", "normbench", "run", str(ROOT / "configs" / "init_scale.py"),
               *(f"--set={o}" for o in overrides), "--out", str(tmp / "out"), "--force"]  # fmt: skip
    env = {**os.environ, "NORMBENCH_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
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
    config = load_config(ROOT / "configs" / "small_batch.py")
    config = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, models=("mlp",), norms=("batch",)))
    return [_cell_row(config, Cell("mlp", "batch", "sgd", batch), peak) for batch in (2, 128)]


# The models and loop cases ask how vmapping scales on this device, in float32 (the peers' precision and the
# default); the init-scale study's own float64 would only halve every row's rate.
FLOAT32 = {"precision": "float32"}


def models_case(peak: float, log, counts=(1, 4, 16, 64, 256)) -> list[dict]:
    base = load_config(ROOT / "configs" / "init_scale.py")
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
    config = load_config(ROOT / "configs" / "init_scale.py")
    config = dataclasses.replace(
        config, sweep=dataclasses.replace(config.sweep, seeds=(0,)), train=dataclasses.replace(config.train, **FLOAT32)
    )
    dataset = load(config.data)
    data = device_data(dataset, config.train.precision)
    rows = []
    for how in ("vmapped", "loop"):
        compile_s = train_s = 0.0
        for cell in cells(config):
            seeds, values = grid_arrays(config, cell)
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
    "small_batch": small_batch_case,
    "models": models_case,
    "loop": loop_case,
}


def _cell_flops(config: Config, cell: Cell) -> int:
    """What one cell computes, as the run's estimate counts it (`normbench.core.budget`): steps, evaluations
    and the held-out ones each counted as often as they run."""
    return estimate(config, load(config.data), workers=1).cell_flops[cells(config).index(cell)]


def _cell_row(config: Config, cell: Cell, peak: float, **extra) -> dict:
    """Compile one cell, train it twice, and time the second (the first also pays for warming up)."""
    dataset = load(config.data)
    seeds, values = grid_arrays(config, cell)
    with precision_scope(config.train.precision):
        data = device_data(dataset, config.train.precision)
        start = time.perf_counter()
        program = compile_cell(config, cell, dataset, data)
        compile_s = time.perf_counter() - start
        jax.block_until_ready(train_program(program, config, cell, data)[0])
        train_s = _timed(train_program, program, config, cell, data)
    flops = _cell_flops(config, cell)
    models = len(seeds) * len(values["init_scale"])
    model_steps = models * config.train.epochs * steps_per_epoch(config, cell, len(dataset.train_x))
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
