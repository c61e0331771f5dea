"""Shared fixtures: tiny models and data, so the suite stays fast on a 2-core CPU."""

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from normbench.config import Config, DataConfig, ModelConfig, SweepConfig, TrainConfig
from normbench.data import Dataset

# Compiles dominate a tiny test's time; XLA's optimizations buy nothing at these sizes.
jax.config.update("jax_disable_most_optimizations", True)
# And most programs are the same from one run of the suite to the next: XLA keeps them compiled in the checkout's
# git-ignored .pytest_cache (the oldest dropped beyond 1 GiB, `pytest_configure`), so a run after the first compiles
# only what changed (the fast tier on a 2-core machine: 3:27, then 1:49). A loaded program is the one compiled
# before, so it computes the same bits. A JAX_COMPILATION_CACHE_DIR of the user's own wins. The tests of normbench's
# own program cache turn it off (`tests/test_programs.py`): a program that XLA's cache loaded is not kept there.
KEPT_PROGRAMS = None if jax.config.jax_compilation_cache_dir else Path(__file__).parent.parent / ".pytest_cache" / "xla"
KEPT_BYTES = 2**30
if KEPT_PROGRAMS is not None:
    jax.config.update("jax_compilation_cache_dir", str(KEPT_PROGRAMS))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_configure(config):
    """Drop the oldest kept programs beyond `KEPT_BYTES`, once, in the process that starts the workers. (JAX's
    own limit, jax_compilation_cache_max_size, took a cold fast tier from 3:29 to 12:57.)"""
    if KEPT_PROGRAMS is not None and not hasattr(config, "workerinput") and KEPT_PROGRAMS.is_dir():
        drop_oldest(KEPT_PROGRAMS, KEPT_BYTES)


def drop_oldest(directory: Path, limit: int) -> None:
    """Delete the oldest files of `directory` (by modification time) beyond `limit` bytes of newer ones."""
    kept = 0
    for entry in sorted(directory.iterdir(), key=lambda path: path.stat().st_mtime, reverse=True):
        kept += entry.stat().st_size
        if kept > limit:
            entry.unlink(missing_ok=True)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the decoded-data cache out of the user's home, shared across the session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NORMBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def tiny_dataset(n_train=48, n_test=24, shape=(4, 4, 1), num_classes=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        name="tiny",
        train_x=rng.random((n_train, *shape), dtype=np.float32),
        train_y=rng.integers(0, num_classes, n_train).astype(np.int32),
        test_x=rng.random((n_test, *shape), dtype=np.float32),
        test_y=rng.integers(0, num_classes, n_test).astype(np.int32),
        num_classes=num_classes,
    )


def tiny_config(**sweep) -> Config:
    return Config(
        name="tiny",
        data=DataConfig(source="mnist5k", n_train=64, n_test=32),
        model=ModelConfig(hidden=(8, 8)),
        train=TrainConfig(epochs=2, eval_batch_size=10),
        sweep=dataclasses.replace(
            SweepConfig(
                norms=("batch",), batch_sizes=(8,), init_scales=(1.0, 0.1), seeds=(0, 1), learning_rates=(0.1,)
            ),
            **sweep,
        ),  # fmt: skip
    )


def study_text(
    train: str = "TrainConfig(epochs=2, eval_batch_size=16)",
    sweep: str = 'SweepConfig(norms=("batch", "none"), batch_sizes=(16,), init_scales=(1.0, 0.1), seeds=(0, 1))',
    figures: str = '("init_scale",)',
) -> str:
    """A tiny study's config file: 64 mnist5k images, an MLP 8-8."""
    return f"""
from normbench.config import Config, DataConfig, ModelConfig, SweepConfig, TrainConfig


def get_config():
    return Config(
        name="tiny",
        data=DataConfig(source="mnist5k", n_train=64, n_test=32),
        model=ModelConfig(hidden=(8, 8)),
        train={train},
        sweep={sweep},
        figures={figures},
    )
"""


TINY_STUDY = study_text()


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """A tiny config file and the results of running it once through the CLI, without --out: in the working
    directory's runs/<config name>."""
    from normbench.cli import main

    root = tmp_path_factory.mktemp("study")
    config = root / "tiny.py"
    config.write_text(TINY_STUDY)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["run", str(config)]) == 0
    finally:
        os.chdir(cwd)
    return config, root / "runs" / "tiny"


def snapshot(directory):
    """Every file under `directory` with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
