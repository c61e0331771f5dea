"""A cell's compiled programs (its phases) are kept across runs (normbench.runtime.programs): loaded, they compute
the same bits as a fresh compile and as one plain `jax.jit` program for all epochs, and they are keyed so that a
change of code or config never reuses a stale one."""

import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import TINY_STUDY, tiny_config, tiny_dataset
from jax.experimental.compilation_cache import compilation_cache

from normbench.catalog import flat_fields
from normbench.config import replace_field
from normbench.core import sweep
from normbench.core.grid import Cell, plan
from normbench.core.sweep import compile_cell, device_data, make_training, train_program, vmap_grid
from normbench.norms import NORMS
from normbench.runtime import phases, programs


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """normbench's program cache in `tmp_path`, and XLA's own off (`tests/conftest.py` keeps the suite's programs):
    a program that XLA's cache loaded is not kept, and these tests look for what is."""
    monkeypatch.setenv("NORMBENCH_CACHE", str(tmp_path))
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    yield tmp_path / "programs"
    jax.config.update("jax_enable_compilation_cache", before)
    compilation_cache.reset_cache()


def run(config, cell, dataset):
    data = device_data(dataset)
    states, result = train_program(compile_cell(config, cell, dataset, data), config, cell, data)
    return jax.device_get(states), result.metrics


PHASES = 3  # start, epoch, finish: the programs kept per cell


def assert_same_bits(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_kept_program_is_loaded_without_tracing_and_computes_the_same_bits(cache, monkeypatch):
    config, dataset, cell = tiny_config(), tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    first = run(config, cell, dataset)
    assert len(list(cache.glob("*.exe"))) == PHASES

    def untraceable(*args, **kwargs):
        def traced(*args, **kwargs):
            raise AssertionError("traced again")

        return make_training(*args, **kwargs)._replace(start=traced, epochs=traced, finish=traced)

    monkeypatch.setattr(sweep, "make_training", untraceable)
    assert_same_bits(run(config, cell, dataset), first)

    seeds, values = plan(config, cell).arrays()
    grid = vmap_grid(make_training(config, cell, dataset.num_classes, len(dataset.train_x)).train)
    assert_same_bits(jax.device_get(jax.jit(grid)(seeds, values, device_data(dataset))), first)


@pytest.mark.parametrize("model", ["mlp", pytest.param("cnn", marks=pytest.mark.slow)])
@pytest.mark.parametrize("phase", phases.QUICK_PHASES)
def test_the_phases_compiled_with_less_optimization_compute_the_same_bits(model, phase):
    """`start` and `finish` are compiled at a lower LLVM level than XLA's default (`phases.QUICK_COMPILE`) only
    because that computes the same initial states and final evaluations (of a trained state, PreciseBN's
    statistics among them); checked at XLA's own defaults, not at the tests' lowered optimization."""
    config = dataclasses.replace(tiny_config(), model=dataclasses.replace(tiny_config().model, hidden=(64, 64)))
    dataset, cell = tiny_dataset(shape=(12, 12, 1), num_classes=10), Cell(model, "batch", "sgd", 8)
    seeds, values = plan(config, cell).arrays()
    data = device_data(dataset)
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    state = jax.jit(vmap_grid(training.start))(seeds, values, data)
    state = jax.jit(vmap_grid(functools.partial(training.epochs, count=2), per_run=(True, False)))(
        seeds, values, data, state, 0
    )[0]
    args = {"start": (seeds, values, data), "finish": (seeds, values, data, state)}[phase]
    program = vmap_grid(getattr(training, phase), per_run=(True,) if phase == "finish" else ())
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        assert phases.compiler_options(phase) == phases.QUICK_COMPILE
        lowered = jax.jit(program).lower(*args)
        default, quick = (lowered.compile(options) for options in (None, phases.QUICK_COMPILE))
        assert_same_bits(quick(*args), default(*args))
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


@pytest.mark.slow
def test_another_config_cell_data_shape_or_class_count_is_another_program(cache):
    config, dataset, cell = tiny_config(), tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    run(config, cell, dataset)
    run(dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3)), cell, dataset)
    run(config, Cell("mlp", "none", "sgd", 8), dataset)
    run(config, cell, tiny_dataset(n_train=40))
    run(config, cell, tiny_dataset(num_classes=4))  # same shapes, a wider output layer
    assert len(list(cache.glob("*.exe"))) == 5 * PHASES


@pytest.mark.slow
@pytest.mark.parametrize("field", ["make", "check"])
def test_a_norm_with_any_function_from_outside_normbench_is_traced_every_time(cache, monkeypatch, field):
    def outside(*args):
        return getattr(NORMS["batch"], field)(*args)

    monkeypatch.setitem(NORMS, "outside", dataclasses.replace(NORMS["batch"], name="outside", **{field: outside}))
    run(tiny_config(norms=("outside",)), Cell("mlp", "outside", "sgd", 8), tiny_dataset())
    assert not list(cache.glob("*.exe"))


def test_nothing_is_kept_with_the_compilation_cache_off(cache, monkeypatch):
    monkeypatch.setenv("NORMBENCH_COMPILATION_CACHE", "0")
    run(tiny_config(), Cell("mlp", "batch", "sgd", 8), tiny_dataset())
    assert not cache.exists()


def flip_a_bit(entry):
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 1
    entry.write_bytes(bytes(data))


def foreign_but_checksummed(entry):
    """An entry that passes its checksum and unpickles, but holds no program."""
    payload = pickle.dumps((b"not a serialized program", None, None, None))
    entry.write_bytes(hashlib.sha256(payload).digest() + payload)


DAMAGES = {
    "flipped bit": flip_a_bit,
    "torn": lambda entry: entry.write_bytes(entry.read_bytes()[:100]),
    "no program": foreign_but_checksummed,
}


@pytest.mark.parametrize(
    "damage", [name if name == "flipped bit" else pytest.param(name, marks=pytest.mark.slow) for name in DAMAGES]
)
def test_a_bad_entry_is_discarded_with_a_warning_and_rewritten(cache, caplog, damage):
    config, dataset, cell = tiny_config(), tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    first = run(config, cell, dataset)
    entry = next(cache.glob("*-epoch.exe"))
    DAMAGES[damage](entry)
    with caplog.at_level(logging.WARNING, logger="normbench"):
        assert_same_bits(run(config, cell, dataset), first)
    (warning,) = caplog.messages
    assert warning.startswith("discarding the bad program cache entry") and "\n" not in warning, warning
    assert programs._load(entry) is not None, "rewritten whole"


def test_the_key_does_not_depend_on_where_the_cache_lives(cache):
    config, cell, args = tiny_config(), Cell("mlp", "batch", "sgd", 8), (np.zeros((2, 3), np.float32),)
    before = jax.config.jax_compilation_cache_dir
    try:
        keys = set()
        for directory in ("/some/cache/xla", "/moved/cache/xla"):
            jax.config.update("jax_compilation_cache_dir", directory)
            keys.add(programs.program_key(config, cell, (NORMS["batch"],), args))
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert len(keys) == 1


@pytest.mark.slow
def test_an_unwritable_cache_only_means_tracing_again(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("NORMBENCH_CACHE", str(blocker / "cache"))
    config, dataset, cell = tiny_config(), tiny_dataset(), Cell("mlp", "batch", "sgd", 8)
    assert_same_bits(run(config, cell, dataset), run(config, cell, dataset))


@pytest.mark.slow
def test_a_program_that_xlas_cache_loaded_is_not_kept(tmp_path):
    """An executable that XLA's cache loaded serializes without its code: kept, it would fail every later run
    ("Function ... not found"). normbench uses XLA's cache only for whole-grid programs, but a user may turn it on
    for everything: with the kept programs gone and XLA's cache full, a run compiles nothing and keeps nothing, and
    the next computes the same bits."""
    config = tmp_path / "tiny.py"
    config.write_text(TINY_STUDY)
    env = {**os.environ, "NORMBENCH_CACHE": str(tmp_path / "cache"), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # fmt: skip

    def run_cli(out):
        command = [sys.executable, "-m", "normbench", "run", str(config), "--out", str(tmp_path / out), "--quiet"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return (tmp_path / out / "metrics.csv").read_bytes()

    first = run_cli("first")
    kept = tmp_path / "cache" / "programs"
    assert len(list(kept.glob("*.exe"))) == 2 * PHASES
    shutil.rmtree(kept)
    assert run_cli("from_xla") == first
    assert not list(kept.glob("*.exe"))
    assert run_cli("again") == first


# Config fields allowed to leave a program's key unchanged: none. The key holds `dataclasses.asdict(config)` whole,
# so even fields that never reach the program (`name`, `report.*`, `figures`) change it; a key narrowed to what
# the program reads may list those here, each with the reason it never reaches the program.
KEY_IGNORES: set[str] = set()


def another(value):
    """A value of the same kind that differs from `value` (valid or not: the key is computed before validation)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, tuple):
        return (*value, value[0]) if value else (1,)
    if isinstance(value, dict):
        return {**value, "other": (1,)}
    assert value is None, f"no other value for {value!r}"
    return 1


def test_every_config_field_that_reaches_the_program_changes_its_key(monkeypatch):
    """program_key (no compiling) differs from the unchanged config's for a change of any single leaf field of the
    config (the nested dataclasses walked generically: norm.epsilon, norm.momentum, model.hidden,
    train.weight_decay, train.schedule, data.n_val and every other), except the commented KEY_IGNORES: a program
    kept for one value of a field is never reused for another."""
    monkeypatch.setenv("NORMBENCH_COMPILATION_CACHE", "1")
    config, cell, args = tiny_config(), Cell("mlp", "batch", "sgd", 8), (np.zeros((2, 3), np.float32),)

    def key(c):
        return programs.program_key(c, cell, (NORMS["batch"],), args)

    base = key(config)
    assert base is not None and key(config) == base
    fields = flat_fields(config)
    named = {"norm.epsilon", "norm.momentum", "model.hidden", "train.weight_decay", "train.schedule", "data.n_val"}
    assert named <= fields.keys() and KEY_IGNORES <= fields.keys()
    unchanged = [name for name, value in fields.items() if key(replace_field(config, name, another(value))) == base]
    assert sorted(unchanged) == sorted(KEY_IGNORES), f"the program key ignores {unchanged}"
