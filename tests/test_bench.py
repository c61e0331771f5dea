"""`normbench bench`'s arithmetic: the ratios issue 16 accepts on, from the rows of its `peers` case; and its
timed cells compute what their config says."""

import dataclasses
import math
import os

import pytest
from conftest import tiny_config

from normbench import bench
from normbench.bench import FLAX_PROTOCOL, NUMPY_PROTOCOL, peer_ratios
from normbench.config import apply_overrides, load_config
from normbench.core.grid import Cell, cells, plan
from normbench.core.sweep import check_fits
from normbench.data import load
from normbench.runtime.cache import caching
from normbench.validate import validate


def test_the_peer_ratios_pair_normbench_with_the_peer_of_its_protocol_round_by_round():
    flax, numpy = " ".join(FLAX_PROTOCOL), " ".join(NUMPY_PROTOCOL)
    rows = [
        {"round": 0, "what": "normbench, caches cold", "protocol": flax, "wall_s": 16.0, "train_s": 6.0},
        {"round": 0, "what": "normbench, caches warm", "protocol": flax, "wall_s": 8.0, "train_s": 6.0},
        {"round": 0, "what": "naive Flax loop", "protocol": "its own", "wall_s": 20.0},
        {"round": 0, "what": "normbench, caches cold", "protocol": numpy, "wall_s": 30.0, "train_s": 9.0},
        {"round": 0, "what": "normbench, caches warm", "protocol": numpy, "wall_s": 12.0, "train_s": 9.0},
        {"round": 0, "what": "textbook NumPy", "protocol": "its own", "wall_s": 24.0},
    ]
    flax_row, numpy_row = peer_ratios(rows)
    assert flax_row == {"round": 0, "peer": "naive Flax loop", "peer_wall_s": 20.0, "cold_over_peer": 0.8,
                        "warm_over_peer": 0.4, "warm_fixed_over_train": 0.33}  # fmt: skip
    assert numpy_row["cold_over_peer"] == 1.25 and numpy_row["warm_fixed_over_train"] == 0.33
    # A peer that was skipped (absent) leaves no ratio.
    assert [row["peer"] for row in peer_ratios(rows[3:])] == ["textbook NumPy"]


def test_several_rounds_end_with_the_median_of_each_ratio():
    flax = " ".join(FLAX_PROTOCOL)
    rows = [
        row
        for round_, (cold, warm, peer) in enumerate([(16.0, 8.0, 20.0), (30.0, 9.0, 20.0), (12.0, 7.0, 24.0)])
        for row in (
            {"round": round_, "what": "normbench, caches cold", "protocol": flax, "wall_s": cold, "train_s": 6.0},
            {"round": round_, "what": "normbench, caches warm", "protocol": flax, "wall_s": warm, "train_s": 6.0},
            {"round": round_, "what": "naive Flax loop", "protocol": "its own", "wall_s": peer},
        )
    ]
    *per_round, median = peer_ratios(rows)
    assert [row["round"] for row in per_round] == [0, 1, 2]
    assert median["round"] == "median of 3" and median["peer_wall_s"] == 20.0
    # the median of each ratio (0.8, 1.5, 0.5 cold), not the ratio of the medians
    assert median["cold_over_peer"] == 0.8 and median["warm_over_peer"] == 0.4


def test_a_timed_cell_trains_in_its_configs_precision(recwarn):
    """Without the precision's scope JAX would truncate a float64 cell to float32 with a warning, and the row
    would time another computation than the one it names."""
    config = tiny_config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision="float64"))
    row = bench._cell_row(config, Cell("mlp", "batch", "sgd", 8), peak=1e11)
    assert row["models"] == 4 and row["train_s"] > 0
    assert not [w for w in recwarn if "float64" in str(w.message)]


def test_the_in_process_cases_compile_with_the_program_cache_off_then_restore_it(monkeypatch):
    monkeypatch.setenv("NORMBENCH_COMPILATION_CACHE", "1")
    with bench._compiling_afresh():
        assert not caching()
    assert caching()
    monkeypatch.delenv("NORMBENCH_COMPILATION_CACHE")
    with bench._compiling_afresh():
        assert not caching()
    assert "NORMBENCH_COMPILATION_CACHE" not in os.environ


def test_the_small_batch_case_times_the_studys_cnn_cells_as_the_study_trains_them():
    study = load_config(bench.SMALL_BATCH)
    config = bench.small_batch_config()
    assert cells(config) == [Cell("cnn", "batch", "sgd", 2), Cell("cnn", "batch", "sgd", 128)]
    assert config.train == study.train and config.train.epochs == 15
    assert all(plan(config, cell).run_count == 20 for cell in cells(config))  # 5 seeds x 4 rates


@pytest.mark.parametrize("cell", bench.CNN_CELLS, ids=lambda cell: cell.label)
def test_a_cnn_cell_trains_the_grid_its_peers_train(cell):
    """The peers' run k has seed k // 4 and rate PEER_RATES[k % 4] x batch / 256, `steps` steps of `batch` in one
    pass after another; normbench's overrides must give that grid, in that order (seed-major, as its rows)."""
    config = apply_overrides(load_config(bench.SMALL_BATCH), cell.overrides(3000))
    validate(config)
    check_fits(config, load(config.data))  # what `normbench run` refuses before training
    (only,) = cells(config)
    assert only == Cell("cnn", cell.norm, "sgd", cell.batch)
    assert config.sweep.learning_rates == bench.PEER_RATES
    runs = plan(config, only).keys()
    assert [run["seed"] for run in runs] == [k // 4 for k in range(cell.runs)]
    expected = [bench.PEER_RATES[k % 4] * cell.batch / 256 for k in range(cell.runs)]
    assert [run["learning_rate"] for run in runs] == pytest.approx(expected)
    assert plan(config, only).steps(3000).per_run == cell.steps and config.train.epochs == 1
    assert config.report.tune_extensions == 0  # the grid alone: no more rates where the best sits at an edge


def _cnn_rows(round_, cold, warm, step, flax, torch, one=None, bare=None, peak=150.0):
    """A round of one cell: by default in 2 processes, with `one` (cold, warm) in one process, else in one; `bare`
    cold without the evaluations after training."""
    label = "batch norm, batch 128, 8 runs x 506 steps"
    default, processes = (1, []) if one is None else (2, [
        {"round": round_, "cell": label, "what": "normbench, 1 process, caches cold", "processes": 1, "wall_s": one[0]},
        {"round": round_, "cell": label, "what": "normbench, 1 process, caches warm", "processes": 1, "wall_s": one[1]},
    ])  # fmt: skip
    return [
        {"round": round_, "cell": label, "what": "normbench, caches cold", "processes": default, "wall_s": cold},
        {"round": round_, "cell": label, "what": "normbench, caches warm", "processes": default, "wall_s": warm},
        *processes,
        *([] if bare is None else [{"round": round_, "cell": label, "processes": default, "wall_s": bare,
                                    "what": "normbench, no evaluations after training, caches cold"}]),
        {"round": round_, "cell": label, "what": "normbench, in process", "us_per_model_step": step,
         "eval_us_per_image_run": 2.0, "eval_over_train_example": 0.5, "train_s": 30.0, "gflop": 900.0,
         "peak_gflops": peak},
        {"round": round_, "cell": label, "what": "Flax loop", "wall_s": flax, "us_per_model_step": 5000.0},
        {"round": round_, "cell": label, "what": "PyTorch loop", "wall_s": torch, "us_per_model_step": 4000.0},
    ]  # fmt: skip


def test_the_cnn_ratios_set_normbench_beside_each_peer_of_its_cell_and_round_then_take_medians():
    rows = _cnn_rows(0, 30.0, 20.0, 4500.0, 20.0, 25.0, one=(40.0, 30.0), bare=25.0)
    rows += _cnn_rows(1, 60.0, 20.0, 3000.0, 30.0, 40.0, peak=180.0)
    rows += _cnn_rows(2, 15.0, 5.0, 5000.0, 25.0, 20.0, (20.0, 10.0))
    *per_round, flax_median, torch_median = bench.cnn_ratios(rows)
    assert [(row["round"], row["peer"]) for row in per_round] == [
        (r, peer) for r in range(3) for peer in ("Flax loop", "PyTorch loop")
    ]
    assert per_round[0] == {"round": 0, "cell": rows[0]["cell"], "peer": "Flax loop", "peer_wall_s": 20.0,
                            "processes": 2, "cold_over_peer": 1.5, "warm_over_peer": 1.0,
                            "one_process_cold_over_peer": 2.0, "one_process_warm_over_peer": 1.5,
                            "bare_cold_over_peer": 1.25,
                            "step_over_peer": 0.9, "eval_over_train_example": 0.5, "train_over_floor": 6.0}  # fmt: skip
    # every round's floor at the run's best peak (round 1's 180 GFLOP/s): 900 GFLOP take 5 s, where 30 s trained
    assert {row["train_over_floor"] for row in per_round} == {6.0}
    assert per_round[1]["step_over_peer"] == 1.12 and per_round[1]["cold_over_peer"] == 1.2
    assert per_round[2]["one_process_cold_over_peer"] is None  # round 1 trained in one process by default
    assert per_round[2]["processes"] == 1
    # the median of each round's ratio (cold over the Flax loop 1.5, 2.0, 0.6; warm 1.0, 0.67, 0.2)
    assert flax_median["round"] == "median of 3" and flax_median["peer"] == "Flax loop"
    assert flax_median["cold_over_peer"] == 1.5 and flax_median["warm_over_peer"] == 0.67
    assert flax_median["processes"] == "1/2"  # the counts the rounds trained in
    # the median of the rounds that have it (2.0 and 0.8)
    assert flax_median["one_process_cold_over_peer"] == 1.4
    assert per_round[2]["bare_cold_over_peer"] is None and flax_median["bare_cold_over_peer"] == 1.25
    assert torch_median["step_over_peer"] == 1.12 and torch_median["peer_wall_s"] == 25.0
    # a cell with no peer (both absent) gives no ratio
    assert bench.cnn_ratios([row for row in rows if row["what"] not in bench.CNN_PEERS]) == []


@pytest.mark.slow
def test_a_cnn_cell_is_timed_phase_by_phase():
    """The in-process row of the `cnn` case on a tiny cell: both of its programs compile and run, and every
    number it reports is finite."""
    tiny = ["data.n_train=64", "data.n_val=16", "model.channels=4,", "train.eval_batch_size=16",
            "train.precise_bn_examples=16"]  # fmt: skip
    row = bench.cnn_phase_row(apply_overrides(load_config(bench.SMALL_BATCH), tiny), bench.CnnCell("batch", 8, 4, 8))
    assert set(row) == {"us_per_model_step", "eval_us_per_image_run", "eval_over_train_example", "train_s", "gflop"}
    assert all(math.isfinite(value) and value > 0 for value in row.values())


@pytest.mark.slow
def test_the_cnn_case_times_normbench_and_each_present_peer_and_writes_their_ratios(tmp_path, monkeypatch):
    """`normbench bench --cases cnn` on one tiny cell: normbench's processes and its phases beside each peer this
    machine has (`../shared/peers`; each one absent is said and left out), then the ratios of each pair."""
    cell = bench.CnnCell("batch", 8, 8, 4)
    monkeypatch.setattr(bench, "CNN_CELLS", (cell,))
    lines = []
    report = bench.run_bench(tmp_path, ("cnn",), log=lines.append)
    peers = [peer for peer in bench.CNN_PEERS if not any(f"skipping the {peer}" in line for line in lines)]
    rows = report["cases"]["cnn"]
    several = len(os.sched_getaffinity(0)) > 1
    # too short a training for `--processes auto` to start workers: by default in one process, so no rows of one
    timed = [
        "normbench, caches cold",
        "normbench, caches warm",
        "normbench, no evaluations after training, caches cold",
    ]
    assert [row["what"] for row in rows] == [*timed, "normbench, in process", *peers]
    assert [row["processes"] for row in rows[:3]] == [1, 1, 1]
    assert all(row["cell"] == cell.label and row["round"] == 0 for row in rows)
    # the cores' round trip just before each row; None on a machine with one CPU
    assert all(row["trip_ns"] > 0 if several else row["trip_ns"] is None for row in rows)
    (phases,) = [row for row in rows if row["what"] == "normbench, in process"]
    assert phases["peak_gflops"] > 0  # measured beside the row, the yardstick of the cell's floor
    assert [row["peer"] for row in report["cases"]["cnn_ratios"]] == peers
    assert (tmp_path / "cnn.csv").exists() and (tmp_path / "cnn_ratios.csv").exists()
    # a line as the cell ends, which a run stopped before the case's table keeps
    (done,) = [line for line in lines if line.startswith(f"cnn: round 0, {cell.label}: ")]
    assert [part.rsplit(" ", 2)[0] for part in done.split(": ", 2)[2].split("; ")] == [*timed, *peers]


def test_the_cores_round_trip_is_measured_between_two_cpus_and_is_none_with_one():
    """`benchmarks/core_trip.py` run as the bench runs it: a positive count of nanoseconds while this thread may
    use two CPUs (its process inherits them), None pinned to one."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        assert bench.core_trip_ns() > 0
    os.sched_setaffinity(0, {min(cpus)})
    try:
        assert bench.core_trip_ns() is None
    finally:
        os.sched_setaffinity(0, cpus)


def test_the_pytorch_loop_is_left_out_where_normbench_trains_on_an_accelerator(tmp_path, monkeypatch):
    """The PyTorch peer trains on the CPU: beside normbench on a GPU its times would compare two machines."""
    for script, _, _ in bench.CNN_PEERS.values():
        (tmp_path / script).touch()
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object())
    lines = []
    assert list(bench._present_peers(tmp_path, lines.append)) == ["Flax loop", "PyTorch loop"]
    monkeypatch.setattr(bench.jax, "default_backend", lambda: "gpu")
    assert list(bench._present_peers(tmp_path, lines.append)) == ["Flax loop"]
    assert lines == ["cnn: skipping the PyTorch loop: it trains on the CPU, and normbench here on gpu"]


@pytest.mark.parametrize("where", ["file/tables", "file", "/proc/normbench"])
def test_bench_into_a_directory_it_cannot_make_is_one_line_exit_2_before_any_case(where, tmp_path, capsys):
    """An unguarded mkdir: a FileExistsError, NotADirectoryError or FileNotFoundError traceback."""
    from normbench.cli import main

    (tmp_path / "file").write_text("not a directory")
    out = where if where.startswith("/") else str(tmp_path / where)
    assert main(["bench", "--cases", "peak", "--out", out]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    assert captured.err.startswith(f"normbench: error: cannot write the bench's tables to '{out}': ")
