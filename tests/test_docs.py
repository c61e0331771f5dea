"""docs/adding_a_norm.md works as written: its norm file conforms, lists and sweeps once registered."""

import re
from pathlib import Path

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
    assert train["optimizer"].startswith("`sgd`, `momentum`")  # its own comment, not the one above `sampling`
    assert field_comments(DataConfig)["n_test"] == field_comments(DataConfig)["n_train"]  # one comment, two fields
    assert "| `data.n_test` | `int \\| None` | `none` | see `data.n_train` |" in text


def test_the_results_schema_lists_every_column_of_metrics_csv_in_order():
    from normbench.results.store import COLUMNS

    text = (DOC.parent / "results.md").read_text()
    table = text.split("## `metrics.csv`")[1].split("## ")[0]
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == COLUMNS
