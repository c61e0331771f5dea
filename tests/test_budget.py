"""The guard on size: `show` and `run` estimate a sweep's memory from traced shapes and its time from its FLOPs
and this machine's recorded rate, and `run` refuses one that cannot fit before anything is compiled or written."""

import dataclasses

import pytest
from conftest import TINY_STUDY, tiny_config, tiny_dataset

from normbench.cli import main
from normbench.config import load_config
from normbench.core import budget
from normbench.core.grid import Cell, cells, plan
from normbench.core.train import make_training
from normbench.data import load
from normbench.flops import jaxpr_flops
from normbench.runtime import calibration

# 2 norms x 2,000 seeds x 2,000 init scales: 8,000,000 runs.
HUGE = [
    "--set",
    "sweep.seeds=" + ",".join(map(str, range(2000))),
    "--set",
    "sweep.init_scales=" + ",".join(f"{1 + i / 2000:.6f}" for i in range(2000)),
]


@pytest.fixture(autouse=True)
def _calibration(tmp_path, monkeypatch):
    """Each test starts uncalibrated: its own calibration file, whatever the session's other runs recorded."""
    monkeypatch.setattr(calibration, "cache_dir", lambda: tmp_path / "calibration")
    return tmp_path / "calibration" / calibration.FILE


def test_show_prints_the_estimate(capsys):
    assert main(["show", "configs/init_scale.py"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "MiB for the largest 2 cells training at once" in last
    # 96 runs x the textbook's 191 steps (1 + 19 epochs x 10). Its MLP 784-100x5-10 takes 559,600 FLOPs per
    # example and step, 238,800 per example evaluated: 20 evaluations of 1,000 training examples, one of the
    # test set, and for BN five more after the last epoch (PreciseBN's 1,000 training examples, the test set on
    # them, on its own batch statistics and example-weighted, the training set on its batch statistics).
    assert "18,336 run-steps, 1.56 TFLOP: about 16 s to 78 s of training at an assumed 20-100 GFLOP/s, " in last
    assert last.endswith("not counting compiling its 2 cells; run once to calibrate")


def test_the_estimate_counts_tested_epochs_without_listing_them(capsys):
    """200,000,000 epochs, each tested (as many as a run's int32 step count allows at 10 steps an epoch): counting
    the epochs as a set of epoch numbers took 20-25 GiB at 369,346,492 (a fuzz example that OOM-killed a CI
    worker); the count is a closed form, so show answers at once."""
    args = ["show", "configs/init_scale.py", "--set", "train.epochs=200000000", "--set", "train.test_every=1"]
    assert main(args) == 0
    assert f"{96 * (1 + 199_999_999 * 10):,} run-steps" in capsys.readouterr().out.splitlines()[-1]


def test_a_tiny_cells_flops_are_the_hand_count():
    # 48 examples of 4x4, an MLP 16-8-8-3: 432 FLOPs forward per example, 1,040 per example of a training step
    # (twice forward, and the input gradients of every layer but the first: 2 x (8x8 + 8x3)).
    config = tiny_config(norms=("none",))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, first_epoch_steps=2, test_every=2))
    cost = budget.estimate(config, tiny_dataset(), workers=1)
    steps = (2 + 6) * 8 * 1040  # 2 steps in the first epoch, 48 / 8 in the second, of batch 8
    evaluations = 2 * 50 * 432 + 30 * 432  # in chunks of 10: 48 training examples each epoch, 24 test once
    assert cost.cell_flops == (4 * (steps + evaluations),)  # 2 seeds x 2 init scales
    assert cost.cell_steps == (8,)


def test_a_training_accuracy_measured_every_few_epochs_counts_only_those_epochs():
    config = tiny_config(norms=("none",))
    train = dataclasses.replace(config.train, epochs=5, test_every=5, train_acc_every=2)
    cost = budget.estimate(dataclasses.replace(config, train=train), tiny_dataset(), workers=1)
    steps = 5 * 6 * 8 * 1040  # 48 / 8 steps an epoch, of batch 8
    evaluations = 3 * 50 * 432 + 30 * 432  # the training set after epochs 2, 4 and the last; the test set once
    assert cost.cell_flops == (4 * (steps + evaluations),)


def test_a_run_long_enough_to_time_calibrates_the_next_estimate(tmp_path, capsys, _calibration):
    config = tmp_path / "tiny.py"
    config.write_text(TINY_STUDY)
    kind = calibration.device_kind()
    calibration.record(kind, "short", 1e11, 100, calibration.MIN_SECONDS * 0.99)
    assert calibration.last_rate(kind) is None
    calibration.record(kind, "long", 1e11, 100, 10.0)
    assert calibration.last_rate(kind) == calibration.Rate(1e10, 0.0, 1)  # one run: its rate alone
    assert main(["show", str(config)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith("of training at this machine's last rate (10 GFLOP/s), not counting compiling its 2 cells")


def test_the_training_time_is_at_the_measured_rate_or_else_the_slower_assumed_one():
    cost = budget.Estimate((1,), 1, 1, 10, cell_flops=(4e11,), cell_steps=(100,))
    assert cost.train_seconds() == pytest.approx(4e11 / budget.ASSUMED_RATES[0])
    rate = calibration.Rate(1e10, 0.01, 2)
    assert dataclasses.replace(cost, rate=rate).train_seconds() == pytest.approx(40 + 100 * 0.01)


def test_a_cpu_run_starved_by_other_jobs_leaves_the_estimate_as_it_was(_calibration):
    """Long enough by the clock but with a fifth of a core (a tiny run beside a study, at nice 19): its rate is the
    other jobs', not this machine's. A GPU's host waits by design, so there the share does not count."""
    calibration.record("cpu: cpu", "starved", 1e11, 100, 10.0, cpu_share=0.2)
    assert calibration.last_rate("cpu: cpu") is None
    calibration.record("cpu: cpu", "alone", 1e11, 100, 10.0, cpu_share=1.7)
    assert calibration.last_rate("cpu: cpu") == calibration.Rate(1e10, 0.0, 1)
    calibration.record("gpu: NVIDIA H200", "waiting host", 1e13, 100, 10.0, cpu_share=0.2)
    assert calibration.last_rate("gpu: NVIDIA H200") == calibration.Rate(1e12, 0.0, 1)


CORRUPT = [None, "", "{not json", "[]", '{"cpu: cpu": 7}', '{"cpu: cpu": [{"flops": -1}]}', "\xff"]


@pytest.mark.parametrize("text", CORRUPT)
def test_a_missing_or_corrupt_calibration_is_no_calibration(text, _calibration, capsys):
    if text is not None:
        _calibration.parent.mkdir(parents=True)
        _calibration.write_bytes(text.encode("latin-1"))
    assert calibration.last_rate(calibration.device_kind()) is None
    assert main(["show", "configs/init_scale.py"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("run once to calibrate")


def test_the_fit_separates_the_rate_from_a_cost_per_step(_calibration):
    kind = "cpu: test"
    # Large batches at 30 GFLOP/s, small ones dominated by 5 ms per step.
    calibration.record(kind, "large", 3e12, 400, 3e12 / 30e9 + 400 * 0.005)
    assert calibration.last_rate(kind).step_s == 0
    calibration.record(kind, "small", 2e11, 5000, 2e11 / 30e9 + 5000 * 0.005)
    rate = calibration.last_rate(kind)
    assert rate.flops_per_s == pytest.approx(30e9) and rate.step_s == pytest.approx(0.005)
    assert rate.seconds(1e12, 1000) == pytest.approx(1e12 / 30e9 + 5)
    calibration.record(kind, "large", 3e12, 400, 50.0)  # a config's rerun replaces its sample
    assert len(calibration._samples(calibration._read()[kind])) == 2


def test_run_refuses_a_sweep_too_large_before_touching_the_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "configs/init_scale.py", *HUGE, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: the sweep needs about ") and err.count("\n") == 1, err
    assert "MiB available" in err
    assert not out.exists()


def test_the_estimate_grows_with_runs_and_the_limit_decides():
    config = load_config("configs/init_scale.py")
    dataset = load(config.data)
    small = budget.estimate(config, dataset, workers=2)
    assert small.peak_bytes > small.data_bytes
    budget.check_memory(small, available=small.peak_bytes)
    limit = f"more than the {(small.peak_bytes - 1) / budget.MIB:,.0f} MiB available"
    with pytest.raises(budget.ConfigError, match=limit):
        budget.check_memory(small, available=small.peak_bytes - 1)
    assert budget.estimate(config, dataset, workers=1).peak_bytes < small.peak_bytes


def epoch_inputs(config, cell):
    """(`Training`, value axes, the data's shapes) of `cell` on the tiny dataset, as the estimate traces it."""
    dataset = tiny_dataset()
    training = make_training(config, cell, dataset.num_classes, len(dataset.train_x))
    return training, plan(config, cell).arrays()[1], budget.abstract_data(dataset, config.train.precision)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_one_run_traced_once_counts_the_memory_of_more_runs(norm):
    """The estimate traces one run and counts the values computed from a run's own inputs once per run: within
    1% of the grid traced at 2 and 5 runs (its few scalars counted per run, which vmap leaves unbatched); counting
    every value once per run, or once for the grid, misses by a half."""
    training, values, data = epoch_inputs(tiny_config(), Cell("mlp", norm, "sgd", 8))

    def grid(runs):
        return budget.epoch_jaxpr(training, budget.grid_args(training, values, data, runs))[0]

    one, per_run = budget.epoch_jaxpr(training, budget.run_args(training, values, data), grid=False)
    for runs in (2, 5):
        assert budget._peak_bytes(one, runs, per_run) == pytest.approx(budget._peak_bytes(grid(runs)), rel=1e-2)


@pytest.mark.parametrize("model, norm", [("mlp", "batch"), ("mlp", "none"), ("cnn", "layer"), ("cnn", "batch")])
def test_one_run_traced_as_itself_has_the_flops_and_bytes_of_a_vmapped_grid_of_one(model, norm):
    """The estimate traces a run outside any grid, where it traced a vmapped grid of one run (`run_args`): vmap
    adds no product and batches every value along an axis of 1."""
    training, values, data = epoch_inputs(tiny_config(models=(model,)), Cell(model, norm, "sgd", 8))
    run, per_run = budget.epoch_jaxpr(training, budget.run_args(training, values, data), grid=False)
    args = budget.grid_args(training, values, data)
    grid, grid_per_run = budget.epoch_jaxpr(training, args)
    assert jaxpr_flops(run, max) == jaxpr_flops(grid, max) > 0
    assert jaxpr_flops(run, min) == jaxpr_flops(grid, min)
    for runs in (1, 3):
        assert budget._peak_bytes(run, runs, per_run) == pytest.approx(
            budget._peak_bytes(grid, runs, grid_per_run), rel=1e-4
        )


def test_the_estimate_is_kept_and_a_repeated_run_does_not_trace(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMBENCH_CACHE", str(tmp_path))
    config = load_config("configs/init_scale.py")
    dataset = load(config.data)
    first = budget.estimate(config, dataset, workers=2)

    def no_tracing(*args):
        raise AssertionError("traced again")

    monkeypatch.setattr(budget, "_estimate", no_tracing)
    assert budget.estimate(config, dataset, workers=1) == dataclasses.replace(first, workers=1)
    with pytest.raises(AssertionError, match="traced again"):  # another config is another entry
        budget.estimate(dataclasses.replace(config, name="other"), dataset, workers=2)


def test_the_memory_estimate_counts_what_precise_bn_holds():
    """PreciseBN's batches are drawn after the last epoch, outside the epoch the estimate traced: at
    train.precise_bn_examples=2**31-1 a run once passed the guard at a few MiB. The evaluations after the last
    epoch hold PreciseBN's example indices (int32) and each batch's statistics, which the estimate must count."""
    config = tiny_config(norms=("batch",), seeds=(0,), init_scales=(1.0,))

    def cell_bytes(examples):
        train = dataclasses.replace(config.train, precise_bn_examples=examples)
        return budget.estimate(dataclasses.replace(config, train=train), tiny_dataset(), workers=1).cell_bytes[0]

    assert cell_bytes(2**20) - cell_bytes(2**10) >= (2**20 - 2**10) * 4


def test_no_cgroup_file_system_is_no_limit(tmp_path):
    assert budget.cgroup_limit(tmp_path / "none", tmp_path / "missing") is None


@pytest.mark.slow  # traces 11 ViT blocks: about 6 s
def test_a_deep_vit_is_traced_at_two_depths_and_extended_exactly():
    """`show` traced every ViT block (a fraction of a second each), so its time grew with model.depth; the blocks
    are alike, so the costs at 2 and 3 blocks extend to any depth: the same bytes and FLOPs as tracing all 6."""
    config = tiny_config(models=("vit",), norms=("batch",))
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, patch_size=2, width=8, heads=2, depth=6)
    )
    dataset = tiny_dataset()
    data = budget.abstract_data(dataset, config.train.precision)
    (cell,) = cells(config)
    programs, work = budget._trace_any_depth(config, cell, dataset, data)
    traced_programs, traced_work = budget._trace(config, cell, dataset, data)
    assert programs == traced_programs
    assert dataclasses.astuple(work) == pytest.approx(dataclasses.astuple(traced_work), rel=1e-12)
    # a depth swept as a static axis is replaced in the cell too, where the plan would otherwise restore it
    swept = Cell("vit", "batch", "sgd", 8, (("model.depth", 6),))
    assert plan(*budget._at_depth(config, swept, 2)).config.model.depth == 2


def test_a_model_without_blocks_is_traced_once_whatever_the_depth():
    config = tiny_config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, depth=10**6))
    assert not budget._reads_depth(config, cells(config)[0])
