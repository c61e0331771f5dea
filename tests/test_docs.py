"""The docs work as written: adding_a_norm.md's norm conforms, lists and sweeps once registered; adding_an_axis.md's
edits make a value axis that sweeps; the config reference and the results schema match the code."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normbench.cli import main
from normbench.conformance import CHECKS
from normbench.norms import NORMS

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding_a_norm.md"


def documented_spec(index, path):
    """The SPEC of the doc's `index`-th python block, executed as the file `path` it says to create."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    namespace = {}
    exec(compile(blocks[index], path, "exec"), namespace)
    return namespace["SPEC"]


@pytest.fixture
def scale_norm(monkeypatch):
    spec = documented_spec(0, "normbench/norms/scale.py")
    monkeypatch.setitem(NORMS, "scale", spec)
    return spec


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_documented_norm_conforms(scale_norm, check):
    check(scale_norm)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_documented_batch_statistics_norm_conforms(check):
    check(documented_spec(2, "normbench/norms/mean_only_batch.py"))


@pytest.mark.slow
def test_the_documented_norm_lists_and_sweeps(scale_norm, tmp_path, capsys):
    from conftest import TINY_STUDY

    assert main(["list", "norms"]) == 0
    assert "ScaleNorm: each example scaled to a learned L2 norm" in capsys.readouterr().out
    config = tmp_path / "tiny.py"
    config.write_text(TINY_STUDY)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--set", "sweep.norms=batch,layer,scale"]) == 0
    assert {line.split(",")[1] for line in (out / "metrics.csv").read_text().splitlines()[1:]} == {
        "batch", "layer", "scale"
    }  # fmt: skip


def test_the_documented_registry_line_matches_the_registry():
    text = (Path(__file__).resolve().parent.parent / "normbench" / "norms" / "__init__.py").read_text()
    assert "from normbench.norms import batch, " in text
    assert "NORMS: dict[str, NormSpec] = {\n    spec.name: spec\n    for spec in (\n        identity.SPEC," in text


def test_the_committed_config_reference_is_what_the_generator_writes():
    from normbench.docs_gen import DOC as CONFIG_DOC
    from normbench.docs_gen import config_reference

    assert CONFIG_DOC.read_text() == config_reference(), "docs/config.md is stale: run python -m normbench.docs_gen"


def test_the_config_reference_has_every_field_with_the_comment_above_it():
    from normbench.catalog import flat_fields
    from normbench.config import Config, DataConfig, TrainConfig
    from normbench.docs_gen import config_reference, field_comments

    text = config_reference()
    assert all(f"| `{key}` |" in text for key in flat_fields(Config()))
    assert "| `train.epochs` | `int` | `20` | The textbook's 20; every metric is recorded after each epoch. |" in text
    train = field_comments(TrainConfig)
    assert train["sampling"].startswith("`permutation`: each epoch visits") and train["sampling"].endswith("does.")
    assert train["optimizer"] == "`sgd` or `adam`."  # its own comment, not the one above `sampling`
    assert field_comments(DataConfig)["n_test"] == field_comments(DataConfig)["n_train"]  # one comment, two fields
    assert "| `data.n_test` | `int \\| None` | `none` | see `data.n_train` |" in text


def test_the_results_schema_lists_every_column_of_metrics_csv_in_order():
    from normbench.config import Config
    from normbench.core import landscape
    from normbench.core.axes import run_columns
    from normbench.results.store import METRIC_COLUMNS

    text = (DOC.parent / "results.md").read_text()
    table = text.split("## `metrics.csv`")[1].split("## ")[0]
    expected = run_columns(Config()) + METRIC_COLUMNS + landscape.COLUMNS  # the last only with landscape_steps
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == expected


AXIS_DOC = DOC.parent / "adding_an_axis.md"


def apply_edits(doc: str, root: Path) -> None:
    """Apply a doc's edit blocks to the files under `root`: each block's first line names the file and either
    `below `<line>`` (insert the block's other lines after it) or `replace `<text>`` (by the block's rest)."""
    for block in re.findall(r"```python\n(.*?)```", doc, re.S):
        head, body = block.split("\n", 1)
        path, how, anchor = re.fullmatch(r"# (\S+): (below|replace) `(.*)`", head).groups()
        target = root / path
        text = target.read_text()
        assert text.count(anchor) == 1, f"{path}: the doc's anchor {anchor!r} is not one place"
        text = text.replace(anchor, anchor + "\n" + body.rstrip("\n") if how == "below" else body.strip())
        target.write_text(text)


@pytest.mark.slow
def test_the_documented_value_axis_is_one_field_one_line_and_one_use(tmp_path):
    root = Path(__file__).resolve().parent.parent
    for folder in ("normbench", "configs"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    doc = AXIS_DOC.read_text()
    apply_edits(doc, tmp_path)
    changed = {
        path: (tmp_path / path).read_text().splitlines()
        for path in ("normbench/config.py", "normbench/core/axes.py", "normbench/core/train.py")
    }
    added = {path: len(lines) - len((root / path).read_text().splitlines()) for path, lines in changed.items()}
    assert added == {"normbench/config.py": 2, "normbench/core/axes.py": 1, "normbench/core/train.py": 0}
    commands = [
        " ".join(c.replace("\\\n", " ").split()) for c in re.findall(r"^    normbench .*(?:\n {8}.*)?", doc, re.M)
    ]
    run = next(c for c in commands if c.startswith("normbench run") and "adam_b2" in c)
    show = next(c for c in commands if c.startswith("normbench show") and "adam_b2" in c)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def normbench(command):
        args = [sys.executable, "-m", "normbench", *command.split()[1:]]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout

    assert re.search(r"train\.adam_b2\s+value", normbench(show))
    normbench(run)
    from normbench.results.store import read_metrics

    table = read_metrics(tmp_path / "runs" / "adam_b2")
    assert set(table["train.adam_b2"]) == {0.98, 0.999}
    low, high = (table["train_loss"][table["train.adam_b2"] == b] for b in (0.98, 0.999))
    assert len(low) == len(high) == 16 * 2 and not np.allclose(low, high)  # 16 init scales, 2 epochs
