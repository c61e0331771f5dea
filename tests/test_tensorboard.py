"""TensorBoard scalars hold the metrics table's values, one TensorBoard run per normbench run."""

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from normbench.errors import UserError
from normbench.results.store import read_metrics

pytest.importorskip("tensorboardX")

from normbench.reports.tensorboard import TensorBoardWriter, write_scalars  # noqa: E402

INIT_SCALE = Path(__file__).resolve().parent.parent / "results" / "init_scale"


def read_events(run_dir: Path) -> list:
    """The summary values of a run's event files (TFRecords: length, its CRC, the event, its CRC), with steps."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack_from("<Q", data, i)
            event = Event.FromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            found += [(event.step, value) for value in event.summary.value]
    return found


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of a run's scalars."""
    scalars = {}
    for step, value in read_events(run_dir):
        if value.HasField("simple_value"):
            scalars.setdefault(value.tag, []).append((step, value.simple_value))
    return scalars


def read_hparams(run_dir: Path) -> dict:
    """The hyperparameters a run's HParams plugin summary gives it."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    for _, value in read_events(run_dir):
        if value.tag == "_hparams_/session_start_info":
            start = HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info
            return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return {}


def test_every_run_of_a_results_table_becomes_a_tensorboard_run_with_its_values(tmp_path):
    columns = read_metrics(INIT_SCALE)
    keep = np.isin(columns["seed"], [1]) & np.isin(columns["norm"], ["batch"])  # 16 runs keep this test fast
    columns = {k: v[keep] for k, v in columns.items()}
    names = write_scalars(tmp_path, columns)
    assert len(names) == 16
    name = "mlp_batch_sgd_b100/init0.0464159_lr0.01/seed1"
    assert name in names
    scalars = read_scalars(tmp_path / name)
    rows = np.isclose(columns["init_scale"], 0.046415888336127795)
    # the study evaluates the test split only at its last epoch (test_every=20); the empty cells write nothing
    for tag, column, epochs in (("train/acc", "train_acc", range(1, 21)), ("test/loss", "test_loss", [20])):
        steps, values = zip(*scalars[tag])
        assert list(steps) == list(epochs)
        expected = columns[column][rows & np.isin(columns["epoch"], list(epochs))]
        np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert [step for step, _ in scalars["test/acc_precise"]] == [20]
    hparams = read_hparams(tmp_path / name)
    assert hparams == pytest.approx({"model": "mlp", "norm": "batch", "protocol": "sgd", "batch_size": 100.0,
                                     "init_scale": 0.046415888336127795, "learning_rate": 0.01, "ghost_size": 100.0,
                                     "seed": 1.0})  # fmt: skip


def test_tensorboard_without_tensorboardx_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import now fails, as when not installed
    with pytest.raises(UserError, match=r"pip install -e '\.\[tensorboard\]'"):
        TensorBoardWriter(Path("tb"))


def test_a_sweep_writes_each_epochs_scalars_for_each_run_as_the_epoch_ends(tmp_path):
    """Each run's event file holds epoch k's scalars when the callback of epoch k returns, before its cell ends."""
    import dataclasses

    from conftest import tiny_config, tiny_dataset

    from normbench.core.sweep import run_sweep
    from normbench.results.store import metrics_csv, parse_metrics

    config = tiny_config(norms=("batch", "none"))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
    seen = []  # (cell, epoch, run, the train/loss steps on disk), as each epoch's callback returns
    done = []

    class Watching(TensorBoardWriter):
        def epoch_metrics(self, index, epoch, seeds, metrics):
            super().epoch_metrics(index, epoch, seeds, metrics)
            for run in sorted(tmp_path.glob(f"mlp_{self.cells[index].norm}_*/*/seed*")):
                steps = [step for step, _ in read_scalars(run)["train/loss"]]
                seen.append((index, epoch, run.relative_to(tmp_path).as_posix(), steps, index in done))

        def cell_done(self, index, result):
            done.append(index)
            super().cell_done(index, result)

    results = run_sweep(config, tiny_dataset(), Watching(tmp_path), workers=1)
    runs = {entry[2] for entry in seen}
    assert len(runs) == 2 * 2 * 2  # 2 cells x 2 init scales x 2 seeds
    for run in runs:
        assert [(epoch, steps, ended) for _, epoch, name, steps, ended in seen if name == run] == [
            (1, [1], False), (2, [1, 2], False), (3, [1, 2, 3], False)
        ]  # fmt: skip
    # The finished event files hold the metrics table's values, each epoch once.
    table = parse_metrics(metrics_csv(config, results))
    expected = tmp_path / "expected"
    write_scalars(expected, table)
    for run in runs:
        assert read_scalars(tmp_path / run) == read_scalars(expected / run), run


def test_a_tensorboard_directory_that_cannot_be_written_stops_the_run_before_it_writes(study, tmp_path, capsys):
    """`--tensorboard FILE/tb` on a run of another config with --force failed once its sweep had started, saying
    it could not write "results", and left an unfinished/ of the new config in the results directory."""
    from conftest import snapshot

    from normbench.cli import main

    config, out = study
    out = shutil.copytree(out, tmp_path / "results")
    (tmp_path / "file").write_text("not a directory")
    before = snapshot(out)
    capsys.readouterr()
    args = ["--set", "sweep.learning_rates=0.1", "--tensorboard", str(tmp_path / "file" / "tb")]
    assert main(["run", str(config), "--out", str(out), "--force", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"normbench: error: cannot write to the TensorBoard directory '{tmp_path}/file/tb': Not a directory\n"
    assert snapshot(out) == before


def test_a_refused_run_leaves_no_new_results_or_tensorboard_directory_behind(study, tmp_path, capsys):
    """A bad --tensorboard path with a new --out left that --out behind, empty. Nor may a refused --out (another
    config's results) leave the new TensorBoard directory it would have written."""
    from normbench.cli import main

    config, out = study
    (tmp_path / "file").write_text("not a directory")
    capsys.readouterr()
    args = ["--out", str(tmp_path / "new" / "results"), "--tensorboard", str(tmp_path / "file" / "tb")]
    assert main(["run", str(config), *args]) == 2
    assert capsys.readouterr().err.startswith("normbench: error: cannot write to the TensorBoard directory")
    args = ["--out", str(out), "--set", "sweep.learning_rates=0.1", "--tensorboard", str(tmp_path / "tb" / "run")]
    assert main(["run", str(config), *args]) == 2
    assert "holds results of a different config" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
