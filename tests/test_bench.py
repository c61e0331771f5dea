"""`normbench bench`'s arithmetic: the ratios issue 16 accepts on, from the rows of its `peers` case; and its
timed cells compute what their config says."""

import dataclasses
import os

from conftest import tiny_config

from normbench import bench
from normbench.bench import FLAX_PROTOCOL, NUMPY_PROTOCOL, peer_ratios
from normbench.core.grid import Cell
from normbench.runtime.cache import caching


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
