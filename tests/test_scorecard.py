"""normbench scorecard on the tiny battery (`--quick`): a user's own norm, registered from their module as
docs/adding_a_norm.md shows, gets its line beside BatchNorm and LayerNorm without retraining them; the scorecard's
numbers follow from the per-test metrics.csv by independent formulas; bad input is one line, exit 2, and nothing of
an earlier scorecard changes. The statistics are checked against scipy on hand-made seeds."""

import csv
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot
from scipy import stats

import normbench
from normbench.cli import main
from normbench.config import ConfigError
from normbench.norms import NORMS
from normbench.norms.registry import NormSpec
from normbench.runtime import calibration
from normbench.scoring.battery import identity
from normbench.scoring.layout import BATTERY, RUNS
from normbench.scoring.scores import MEASURES, Score, compare, reached_scales

# docs/adding_a_norm.md's section 1 (ScaleNorm), as the page has it, to be saved as a user's own module
EXAMPLE = Path(__file__).resolve().parent.parent / "experiments" / "scorecard_of_the_example_norm.py"


def example_source():
    spec = importlib.util.spec_from_file_location("scorecard_of_the_example_norm", EXAMPLE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.example_source()


def stamped(directory):
    """Every file under `directory` with its bytes and its modification time: a file written again changes it."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


def scorecard_rows(out):
    with open(out / "scorecard.csv") as f:
        return {(row["norm"], row["test"]): row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """The references' scorecard, then the same directory again with the user's norm added."""
    root = tmp_path_factory.mktemp("scorecard")
    (root / "my_norms.py").write_text(example_source())
    spec = importlib.util.spec_from_file_location("my_norms", root / "my_norms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = normbench.scorecard(["batch", "layer"], root / "card", quick=True)
    references = stamped(out / RUNS)
    normbench.register_norm(module.SPEC)
    try:
        normbench.scorecard(["scale"], out, quick=True)
        yield out, references
    finally:
        del NORMS["scale"]


@pytest.mark.slow
def test_a_users_norm_gets_its_line_and_the_references_are_not_retrained(card):
    out, references = card
    assert {p: stamp for p, stamp in stamped(out / RUNS).items() if p in references} == references
    assert (out / RUNS / "scale" / "cnn" / "metrics.csv").is_file()
    rows = scorecard_rows(out)
    measures = [m.name for m in MEASURES]
    assert {test for norm, test in rows if norm == "scale"} == set(measures)
    drop = rows["scale", "small_batch_drop"]
    assert (drop["mean"], drop["n"], drop["note"]) == ("0", "0", "0 by construction: batch-independent, not trained")
    assert not (out / RUNS / "scale" / "small_batch").exists()
    for measure in ("cnn_acc", "vit_acc", "init_scale_early"):
        row = rows["scale", measure]
        assert row["n"] == "2" and float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
        assert row["minus_batch_verdict"] and row["minus_layer_verdict"]
    assert "**ScaleNorm**" not in (out / "scorecard.md").read_text()  # a user's norm keeps its own name
    assert "**scale**:" in (out / "scorecard.md").read_text()
    for test in ("init_scale", "small_batch", "cnn", "vit"):
        config = json.loads((out / test / "config.json").read_text())["config"]
        trained = ["batch"] if test == "small_batch" else ["batch", "layer", "scale"]  # LN and ScaleNorm: no drop
        assert config["sweep"]["norms"] == trained
    assert (out / "scorecard.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_scorecard_number_is_its_test_metrics_recomputed(card):
    out, _ = card
    with open(out / "cnn" / "metrics.csv") as f:
        table = [row for row in csv.DictReader(f)]
    last = str(max(int(row["epoch"]) for row in table))
    final = [row for row in table if row["epoch"] == last]

    def at_tuned_rate(norm):
        mine = [row for row in final if row["norm"] == norm]
        rates = sorted({row["learning_rate"] for row in mine})
        val = {r: np.mean([0.0 if row["diverged"] == "1" else float(row["val_acc"]) for row in mine
                           if row["learning_rate"] == r]) for r in rates}  # fmt: skip
        best = max(rates, key=lambda r: val[r])
        return {row["seed"]: float(row["test_acc"]) for row in mine if row["learning_rate"] == best}

    scale, batch = at_tuned_rate("scale"), at_tuned_rate("batch")
    values = 100 * np.array(list(scale.values()))
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    row = scorecard_rows(out)["scale", "cnn_acc"]
    assert float(row["mean"]) == pytest.approx(values.mean(), abs=1e-2)
    assert float(row["ci_low"]) == pytest.approx(values.mean() - half, abs=1e-2)
    difference = 100 * np.array([scale[s] - batch[s] for s in sorted(scale)])
    assert float(row["minus_batch"]) == pytest.approx(difference.mean(), abs=1e-2)


@pytest.mark.slow
def test_another_batterys_directory_is_refused_and_kept(card, capsys):
    out, _ = card
    before = snapshot(out)
    assert main(["scorecard", "batch", "--out", str(out)]) == 2  # the full battery into the tiny one's directory
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "another battery's results (differs in cost.cnn.data.n_test" in error
    assert snapshot(out) == before


@pytest.mark.slow
def test_show_has_nothing_left_to_train(card, capsys):
    out, _ = card
    assert main(["scorecard", "batch", "layer", "--quick", "--show", "--out", str(out)]) == 0
    assert "every norm is finished; nothing to train" in capsys.readouterr().out


def test_show_counts_the_cells_to_compile_once_uncalibrated(tmp_path, capsys, monkeypatch):
    """Uncalibrated, each test's and each norm's time is the assumed range alone: the cells to compile are counted
    once, in the first line (each part once said "not counting compiling its 0 cells")."""
    monkeypatch.setattr(calibration, "cache_dir", lambda: tmp_path / "calibration")  # no rate an earlier test kept
    assert main(["scorecard", "batch", "--quick", "--show", "--out", str(tmp_path / "card")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# ")]
    head, parts = lines[0], lines[1:]
    assert re.search(r"; run once to calibrate; .*compiling [1-9]\d* cells and the cost test's programs", head)
    assert parts and not any("compiling" in line or "calibrate" in line for line in parts)
    assert all("of training at an assumed 20-100 GFLOP/s" in line for line in parts)


@pytest.mark.slow
def test_a_test_a_norm_cannot_take_is_not_applicable_not_a_value(card, tmp_path):
    """The ViT takes no +ws norm (its norms see residual sums): group+ws is neither trained nor timed there, and
    the scorecard says n/a where a 0 or a failed run would mislead."""
    out = tmp_path / "card"
    shutil.copytree(card[0], out)
    normbench.scorecard(["group+ws"], out, quick=True)
    rows = scorecard_rows(out)
    for measure in ("vit_acc", "vit_cost"):
        row = rows["group+ws", measure]
        assert row["note"].startswith("not applicable: model 'vit' takes no +ws norm") and row["mean"] == "nan"
        assert row["minus_batch"] == row["minus_layer"] == ""
    assert rows["group+ws", "cnn_acc"]["n"] == "2" and float(rows["group+ws", "cnn_cost"]["mean"]) > 0
    assert "group+ws" not in json.loads((out / "vit" / "config.json").read_text())["config"]["sweep"]["norms"]
    assert not (out / RUNS / "group+ws" / "vit").exists()
    line = next(
        line for line in (out / "scorecard.md").read_text().splitlines() if line.startswith("| GroupNorm + WS |")
    )
    assert line.count("n/a") == 2


def test_a_model_that_takes_no_norm_of_a_kind_is_refused_before_tracing(capsys):
    assert main(["show", "configs/transformer_norms.py", "--set", "sweep.norms=group+ws"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "model 'vit' takes no +ws norm such as 'group+ws'" in error


def needs_ghost_size(config, channels):
    if config.ghost_size is None:
        raise ConfigError("needy: set norm.ghost_size")


def test_bad_norms_are_one_line_and_touch_nothing(tmp_path, capsys, monkeypatch):
    needy = NormSpec("needy", NORMS["layer"].make, False, False, "LayerNorm, asking an option", check=needs_ghost_size)
    monkeypatch.setitem(NORMS, "needy", needy)
    earlier = tmp_path / "card"
    earlier.mkdir()
    (earlier / BATTERY).write_text(json.dumps(identity(quick=True)))
    (earlier / "notes.txt").write_text("mine")
    before = snapshot(earlier)
    cannot = "norm 'needy' cannot run the scorecard's init_scale test: needy: set norm.ghost_size"
    for norm, expected in (("no_such_norm", "unknown norm 'no_such_norm'"), ("needy", cannot)):
        assert main(["scorecard", norm, "--quick", "--out", str(earlier)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and expected in error
    assert snapshot(earlier) == before


def test_a_directory_of_other_results_is_refused_and_kept(tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "metrics.csv").write_text("model,norm\n")
    full = tmp_path / "full"
    full.mkdir()
    (full / BATTERY).write_text(json.dumps(identity(quick=False)))
    damaged = []
    for name, battery in (
        ("not_json", "{"),
        ("a_list", "[]"),
        ("no_cost", '{"tests": {}}'),
        ("not_configs", '{"tests": {"cnn": 1}, "cost": {}}'),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / BATTERY).write_text(battery)
        damaged.append((tmp_path / name, "is damaged; choose another --out"))
    for out, expected in ((study, "holds no scorecard"), (full, "holds another battery's results"), *damaged):
        before = snapshot(out)
        assert main(["scorecard", "--quick", "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and expected in error
        assert snapshot(out) == before


def test_a_file_as_the_scorecards_directory_is_said_to_be_no_directory(tmp_path, capsys):
    """It was said to hold no scorecard, as a directory of other files is."""
    (tmp_path / "file").write_text("mine")
    assert main(["scorecard", "batch", "--quick", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"normbench: error: '{tmp_path}/file' is not a directory; choose another --out\n"
    assert (tmp_path / "file").read_text() == "mine"


def test_a_field_added_since_a_battery_was_recorded_is_read_at_its_default(tmp_path):
    """A battery.json from before a config field existed holds the same battery while the battery asks for the
    field's default, and another one once it asks for another value, as a results directory's config.json does."""
    from normbench.scoring.run import BatteryError, check_out

    battery = json.loads(json.dumps(identity(quick=True)))
    older = json.loads(json.dumps(battery))
    for group in ("tests", "cost"):
        for config in older[group].values():
            del config["train"]["train_acc_every"]
    (tmp_path / BATTERY).write_text(json.dumps(older))
    check_out(tmp_path, battery)
    battery["tests"]["cnn"]["train"]["train_acc_every"] = 5
    with pytest.raises(
        BatteryError, match=r"another battery's results \(differs in tests\.cnn\.train\.train_acc_every\)"
    ):
        check_out(tmp_path, battery)


def test_the_committed_scorecard_is_this_battery_so_a_norm_more_trains_alone():
    """results/scorecard/battery.json is the battery `normbench scorecard` runs now: a user's norm (as
    experiments/scorecard_of_the_example_norm.py adds ScaleNorm) joins the committed directory, not a new one."""
    from normbench.scoring.run import check_out

    check_out(EXAMPLE.parents[1] / "results" / "scorecard", identity(quick=False))


def holm_by_hand(p):
    """Holm's adjusted p-values, the textbook's loop."""
    order, adjusted, running = np.argsort(p), np.empty(len(p)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_paired_differences_are_scipys_and_holm_adjusts_over_the_norms_own_comparisons():
    rng = np.random.default_rng(0)
    seeds = range(5)
    per = {norm: {m.name: Score({s: float(v) for s, v in zip(seeds, rng.normal(0.9, 0.02, 5))})
                  for m in MEASURES if m.per_seed is not None} for norm in ("batch", "layer", "x")}  # fmt: skip
    per["x"]["small_batch_drop"] = per["layer"]["small_batch_drop"] = Score(None)  # batch-independent
    found = compare(per, "x")
    assert ("small_batch_drop", "layer") not in found  # both 0 by construction: nothing to test
    drop = found["small_batch_drop", "batch"]
    bn = np.array(list(per["batch"]["small_batch_drop"].values.values()))
    assert drop.mean == pytest.approx(-bn.mean()) and drop.p == pytest.approx(stats.ttest_1samp(-bn, 0).pvalue)
    x, bn = (np.array(list(per[n]["cnn_acc"].values.values())) for n in ("x", "batch"))
    cnn = found["cnn_acc", "batch"]
    assert cnn.p == pytest.approx(stats.ttest_rel(x, bn).pvalue)
    assert cnn.half_width == pytest.approx(stats.t.ppf(0.975, 4) * (x - bn).std(ddof=1) / np.sqrt(5))
    keys = list(found)
    np.testing.assert_allclose([found[k].adjusted_p for k in keys], holm_by_hand([found[k].p for k in keys]))
    assert len(keys) == 2 * 5 - 1


def test_reached_scales_counts_the_final_epoch_per_seed_and_a_diverged_run_does_not_reach():
    columns = {
        "epoch": np.array([1, 2, 1, 2, 1, 2, 1, 2]),
        "seed": np.array([0, 0, 0, 0, 1, 1, 1, 1]),
        "init_scale": np.array([1.0, 1.0, 0.1, 0.1, 1.0, 1.0, 0.1, 0.1]),
        "train_acc": np.array([0.95, 0.5, 0.1, 0.95, 0.1, 0.92, 0.1, 0.99]),
        "diverged": np.array([0, 0, 0, 0, 0, 0, 0, 1]),
    }
    assert reached_scales(columns, None) == ({0: 1.0, 1: 1.0}, 0)


def test_the_docs_quote_the_committed_scorecard_as_it_prints():
    """docs/studies.md's scorecard rows are results/scorecard/scorecard.md's own lines, and each cost ratio it states
    is a cell of that table: a rerun that changes a number fails here until the docs follow."""
    root = EXAMPLE.parents[1]
    card = (root / "results" / "scorecard" / "scorecard.md").read_text()
    section = (root / "docs" / "studies.md").read_text().split("## scorecard")[1].split("\n## ")[0]
    quoted = [line for line in section.splitlines() if line.startswith("| ") and " | " in line[2:]][2:]
    assert len(quoted) >= 10 and all(line in card.splitlines() for line in quoted)
    for ratio in re.findall(r"(\d\.\d+x \[\d\.\d+, \d\.\d+\])", section):
        mean, interval = ratio.split("x ")
        assert f"{mean} {interval} (5)" in card


def test_adding_a_norm_quotes_its_example_norms_scorecard_as_it_prints():
    root = EXAMPLE.parents[1]
    card = (root / "docs" / "scorecard_scale.md").read_text().splitlines()
    page = (root / "docs" / "adding_a_norm.md").read_text().split("## 10. Its scorecard")[1]
    quoted = [line for line in page.splitlines() if line.startswith(("| scale |", "- **scale**"))]
    assert len(quoted) == 2 and all(line in card for line in quoted)
