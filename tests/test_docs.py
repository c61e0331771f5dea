"""The docs work as written: adding_a_norm.md followed verbatim on a copy of the repository keeps the norm tests
green, and its norms conform, list and sweep; adding_an_axis.md's edits make a value axis that sweeps; every Python
block a reader pastes runs, and the values its comments state are what it computes; what the tutorial quotes of a
command's output is that output; the config reference and the results schema match the code."""

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normbench.cli import main
from normbench.conformance import CHECKS
from normbench.norms import NORMS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC = DOCS / "adding_a_norm.md"
AXIS_DOC = DOCS / "adding_an_axis.md"
TUTORIAL = DOCS / "tutorial.md"
NEW_NORMS = DOCS / "data" / "small_batch_new_norms"  # the run of the tutorial's section 3

# An edit block's first line: the file, then `new file`, `below `<line>`` (insert the block's other lines after
# it) or `replace `<text>`` (by the block's other lines)
EDIT = re.compile(r"# (\S+): (new file|below `(.*)`|replace `(.*)`)")


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


def edits(doc: Path) -> list[tuple[str, str, str | None, str]]:
    """A doc's edit blocks in order, each as (file, "new", "below" or "replace", anchor, the block's other lines)."""
    found = []
    for block in python_blocks(doc):
        head, body = block.split("\n", 1)
        if match := EDIT.fullmatch(head):
            found.append((match[1], match[2].split()[0], match[3] or match[4], body))
    return found


def apply_edits(doc: Path, root: Path) -> None:
    """Apply a doc's edit blocks, in order, to the files under `root`."""
    for path, how, anchor, body in edits(doc):
        target = root / path
        if how == "new":
            target.write_text(body)
            continue
        text = target.read_text()
        assert text.count(anchor) == 1, f"{path}: the doc's anchor {anchor!r} is not one place"
        text = text.replace(anchor, anchor + "\n" + body.rstrip("\n") if how == "below" else body.strip())
        target.write_text(text)


def documented_spec(path: str):
    """The SPEC of the doc's block that creates the file `path`, executed as that file."""
    (body,) = [body for file, how, _, body in edits(DOC) if file == path and how == "new"]
    namespace = {}
    exec(compile(body, path, "exec"), namespace)
    return namespace["SPEC"]


def commands(doc: Path, program: str) -> list[str]:
    """The commands of a doc's indented blocks that start with `program`, continuation lines joined."""
    text = doc.read_text().replace("\\\n", " ")
    return [" ".join(line.split()) for line in re.findall(rf"^    ({program} .*)$", text, re.M)]


@pytest.fixture
def scale_norm(monkeypatch):
    spec = documented_spec("normbench/norms/scale.py")
    monkeypatch.setitem(NORMS, "scale", spec)
    return spec


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_documented_norm_conforms(scale_norm, check):
    check(scale_norm)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_documented_batch_statistics_norm_conforms(check):
    check(documented_spec("normbench/norms/mean_only_batch.py"))


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


@pytest.mark.parametrize("doc", [DOC, AXIS_DOC], ids=lambda doc: doc.name)
def test_each_documented_edit_applies_to_the_files_as_they_are(doc, tmp_path):
    """The fast check of the two pages' edits: each anchor is one place, and every edited file still compiles."""
    for file in {path for path, how, _, _ in edits(doc) if how != "new"}:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / file, tmp_path / file)
    apply_edits(doc, tmp_path)
    for file in {path for path, *_ in edits(doc)}:
        compile((tmp_path / file).read_text(), file, "exec")


@pytest.mark.slow
def test_following_adding_a_norm_verbatim_keeps_the_norm_tests_green(tmp_path):
    copy = tmp_path / "repo"
    for folder in ("normbench", "tests", "configs"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    apply_edits(DOC, copy)
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def doc_command(program, *more):
        (command,) = commands(DOC, program)
        args = [sys.executable, "-m", *command.split(), *more]
        return subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True)

    (sweep,) = commands(DOC, "normbench run")
    show = [sys.executable, "-m", "normbench", *show_arguments(sweep.split()[1:])]
    shown = subprocess.run(show, cwd=copy, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    listed = doc_command("normbench list")
    assert listed.returncode == 0 and "ScaleNorm: each example scaled" in listed.stdout
    assert "Mean-only BatchNorm: the batch mean subtracted" in listed.stdout
    tests = doc_command("pytest", "-n", "0", "-v", "-p", "no:cacheprovider")  # -n 0: one worker, in this test
    assert tests.returncode == 0, tests.stdout[-5000:]
    passed = set(re.findall(r"^(\S+) PASSED", tests.stdout, re.M))
    for name in ("scale", "mean_only_batch"):
        for shape in ("shape0", "shape1"):
            assert f"tests/test_norms.py::test_float64_input_is_normalized_in_float64[{name}-{shape}]" in passed
        assert f"tests/test_conformance.py::test_norm_conforms[{name}-keeps_shape_and_dtype]" in passed
    assert "tests/test_norms.py::test_every_norm_has_a_float64_reference" in passed


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

    text = (DOCS / "results.md").read_text()
    table = text.split("## `metrics.csv`")[1].split("## ")[0]
    expected = run_columns(Config()) + METRIC_COLUMNS + landscape.COLUMNS  # the last only with landscape_steps
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == expected


@pytest.mark.slow
def test_the_documented_value_axis_is_one_field_one_line_and_one_use(tmp_path):
    for folder in ("normbench", "configs"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    apply_edits(AXIS_DOC, tmp_path)
    changed = {
        path: (tmp_path / path).read_text().splitlines()
        for path in ("normbench/config.py", "normbench/core/axes.py", "normbench/core/train.py")
    }
    added = {path: len(lines) - len((ROOT / path).read_text().splitlines()) for path, lines in changed.items()}
    assert added == {"normbench/config.py": 2, "normbench/core/axes.py": 1, "normbench/core/train.py": 0}
    run = next(c for c in commands(AXIS_DOC, "normbench run") if "adam_b2" in c)
    show = next(c for c in commands(AXIS_DOC, "normbench show") if "adam_b2" in c)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def normbench(command):
        args = [sys.executable, "-m", "normbench", *command.split()[1:]]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout

    assert re.search(r"train\.adam_b2\s+value", normbench(show))
    normbench(run)
    from normbench.results.store import parse_metrics

    # Parsed alone: this checkout's Config has no train.adam_b2, so it cannot read the copy's config.json.
    table = parse_metrics((tmp_path / "runs" / "adam_b2" / "metrics.csv").read_text())
    assert set(table["train.adam_b2"]) == {0.98, 0.999}
    low, high = (table["train_loss"][table["train.adam_b2"] == b] for b in (0.98, 0.999))
    assert len(low) == len(high) == 16 * 2 and not np.allclose(low, high)  # 16 init scales, 2 epochs


def pasted_blocks() -> list:
    """(doc, block) for every Python block in docs/ that a reader pastes into Python rather than into a file."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        blocks = [b for b in python_blocks(doc) if not EDIT.fullmatch(b.split("\n", 1)[0])]
        found += [pytest.param(doc.name, b, id=f"{doc.name}-{i}") for i, b in enumerate(blocks)]
    return found


def with_stated_values_checked(block: str) -> str:
    """`block` with each line `expression  # value` (a Python literal, then perhaps `: words`) made an assert
    that the expression gives that value, as the doc says it does."""
    lines = []
    for line in block.splitlines():
        code, _, comment = line.partition("  # ")
        try:
            ast.parse(code, mode="eval")
            value = ast.literal_eval(comment.split(":")[0])
        except (SyntaxError, ValueError, TypeError):  # not an expression, or a comment that states no value
            lines.append(line)
            continue
        lines.append(f"assert ({code}) == {value!r}, {line!r}")
    return "\n".join(lines) + "\n"


def test_a_stated_value_becomes_an_assert_and_other_comments_stay():
    block = "x = 2  # two\nx + 1  # 3\nx  # 2: the count\nprint(x)  # prints it\n"
    assert with_stated_values_checked(block).splitlines() == [
        "x = 2  # two",
        "assert (x + 1) == 3, 'x + 1  # 3'",
        "assert (x) == 2, 'x  # 2: the count'",
        "print(x)  # prints it",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("doc, block", pasted_blocks())
def test_a_pasted_python_block_runs_and_gives_the_values_it_states(doc, block, tmp_path):
    """Run as a reader would, from a fresh interpreter in a directory of its own that has the repository's
    configs/ and results/ (and my_norms.py: adding_a_norm.md's section 1 saved under the name its import uses)."""
    for folder in ("configs", "results"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    (scale,) = [body for file, how, _, body in edits(DOC) if file == "normbench/norms/scale.py"]
    (tmp_path / "my_norms.py").write_text(scale)
    (tmp_path / "block.py").write_text(with_stated_values_checked(block))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{doc}:\n{block}\n{result.stderr[-3000:]}"


def show_output(config: str, capsys) -> list[str]:
    assert main(["show", str(ROOT / config)]) == 0
    return [line.rstrip() for line in capsys.readouterr().out.splitlines()]


def quotes(quoted: list[str], printed: list[str]) -> bool:
    """Whether `quoted` are consecutive lines of `printed`, a quoted line ending in "..." standing for any ending."""

    def same(quote, line):
        return line.startswith(quote.removesuffix("...")) if quote.endswith("...") else line == quote

    n = len(quoted)
    return any(all(map(same, quoted, printed[i : i + n])) for i in range(len(printed) - n + 1))


def test_a_quote_is_consecutive_lines_and_three_dots_elide_an_ending():
    printed = ["a", "b 1", "c: about 5 s"]
    assert quotes(["b 1", "c: about ..."], printed) and quotes(["a"], printed)
    assert not quotes(["a", "c: about ..."], printed) and not quotes(["b 2"], printed)


@pytest.mark.slow
def test_what_the_tutorial_quotes_of_show_is_what_show_prints(capsys):
    text = TUTORIAL.read_text()
    # Section 1: the command, then "..." and the lines it quotes
    config, quoted = re.search(r"^    normbench show (\S+)\n\n    \.\.\.\n((?:    .*\n)+)", text, re.M).groups()
    assert quotes([line[4:] for line in quoted.splitlines()], show_output(config, capsys))
    # Section 2: a line it quotes in the text, less its "# "
    config, quoted = re.search(r"`normbench show (\S+)` counts\s+`([^`]+)`", text).groups()
    assert quotes(["# " + " ".join(quoted.split())], show_output(config, capsys))


def documented_commands() -> list:
    """Every `normbench` command a reader pastes from docs/ (not a synopsis with `[...]` or an upper-case
    placeholder), but those that need a page's edits first: adding_a_norm.md's (its norm), which the test that
    follows the page runs on its copy, and adding_an_axis.md's for `train.adam_b2`, which its test runs."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        for command in commands(doc, "normbench"):
            argv = shlex.split(command, comments=True)[1:]
            if "[" in command or any(a.isupper() for a in argv) or doc == DOC or "adam_b2" in command:
                continue
            found.append(pytest.param(argv, id=f"{doc.name}: {' '.join(argv)}"[:100]))
    return found


def show_arguments(argv: list[str]) -> list[str]:
    """`normbench show` of what a `normbench run` command would train: its config, --set and --sweep."""
    kept = [argv[1]]
    for flag, value in zip(argv, argv[1:]):
        if flag in ("--set", "--sweep"):
            kept += [flag, value]
    return ["show", *kept]


@pytest.mark.slow
@pytest.mark.parametrize("argv", documented_commands())
def test_a_documented_command_is_accepted_and_its_study_resolves(argv, monkeypatch, capsys):
    """Its arguments parse; a `run` resolves its config and overrides (as `show`, so no study trains here), and
    `list` and `show` run. `report`, `compare` and `plot` read results directories that earlier commands write."""
    from normbench.cli import parser

    monkeypatch.chdir(ROOT)
    parser().parse_args(argv)
    if argv[0] == "run":
        assert main(show_arguments(argv)) == 0, capsys.readouterr().err
    elif argv[0] in ("list", "show"):
        assert main(argv) == 0, capsys.readouterr().err


def section(doc: Path, heading: str) -> str:
    """The text of a doc's section, from its heading to the next, whitespace made single spaces."""
    return " ".join(doc.read_text().split(f"\n{heading}\n")[1].split("\n## ")[0].split())


def seconds(saved: dict) -> float:
    return sum(saved["timings"].values())


def test_the_tutorials_timings_of_the_init_scale_study_are_its_committed_runs():
    saved = json.loads((ROOT / "results" / "init_scale" / "config.json").read_text())
    total, compiling = round(seconds(saved)), round(saved["timings"]["compile_s"])
    assert f"({total} s on 2 cores, {compiling} s of it compiling, by the timings in" in section(
        TUTORIAL, "## 1. The textbook figure"
    )


def findings(results: Path) -> list:
    """A results directory's claims judged as its summary.md judges them (at the values tuned on validation), those
    its runs decide."""
    from normbench.results.claims import Finding, evaluate_all, tune
    from normbench.results.store import read_config, read_metrics

    config = read_config(results)
    columns, _ = tune(read_metrics(results), config.report.tune)
    judged = evaluate_all(config.report.claims, columns)
    return [f for f in judged if isinstance(f, Finding)]


def claim(results: Path, contrast: str, signs: str = "+.1f") -> list[str]:
    """A claim's mean and 95% interval in points, as the docs round them."""
    (found,) = [f for f in findings(results) if f.claim.text.endswith(f": {contrast}")]
    mean, half = found.mean * found.scale, found.half_width * found.scale
    return [f"{v:{signs}}" for v in (mean, mean - half, mean + half)]


def steps(results: Path) -> dict[int, int]:
    """The train steps of each batch size's runs in a results directory."""
    from normbench.core.grid import cells, plan
    from normbench.data import load
    from normbench.results.store import read_config

    config = read_config(results)
    n_train = len(load(config.data).train_x)
    return {cell.batch_size: plan(config, cell).steps(n_train).per_run for cell in cells(config)}


def test_the_tutorials_small_batch_study_states_its_committed_run():
    """Section 2's time and claims are those of results/small_batch, as its config.json and summary.md have them."""
    study = ROOT / "results" / "small_batch"
    saved = json.loads((study / "config.json").read_text())
    counts = steps(study)
    text = section(TUTORIAL, "## 2. The small-batch study")
    bn = claim(study, "norm=batch batch_size=2 - norm=batch batch_size=128", "+.2f")  # summary.md's digits
    ln = claim(study, "norm=layer batch_size=2 - norm=layer batch_size=128", "+.2f")
    one_norm = re.compile(r": norm=(\w+) batch_size=2 - norm=\1 batch_size=128$")  # each norm's change alone
    changes = [f for f in findings(study) if one_norm.search(f.claim.text)]
    assert len(changes) == 3 and not any(f.significant() for f in changes)
    for stated in (
        "no norm's accuracy changes significantly from batch 128 to 2 after Holm's correction over the study's "
        f"{changes[0].family} claims",
        f"without the study's {counts[128]:,}-step floor for batch 128",
        f"({round(seconds(saved) / 60)} min for the run that made `results/small_batch`",
        f"mean and 95% confidence band over {len(saved['config']['sweep']['seeds'])} seeds",
        f"it gains {ln[0]} points [{ln[1]}, {ln[2]}] at batch 2 (whose equal epochs are {counts[2] // counts[128]} "
        f"times batch 128's steps: a difference of the protocol, not tested as LN's cause); BN's {bn[0]} "
        f"[{bn[1]}, {bn[2]}] is not significant",
    ):
        assert stated in text


def test_the_tutorials_new_norms_sweep_states_what_its_run_measured():
    """Section 3's numbers against its run's files: the run is the section's command, and every number the
    section states of it is computed here from its metrics.csv and config.json, claims as summary.md judges them."""
    from normbench.results.store import read_config, read_metrics

    saved = json.loads((NEW_NORMS / "config.json").read_text())
    (command,) = [c for c in commands(TUTORIAL, "normbench run") if "small_batch_new_norms" in c]

    def arguments(argv):  # where the results went and how progress showed are not the run's
        out = argv.index("--out")
        return [a for a in argv[argv.index("run") : out] + argv[out + 2 :] if a != "--quiet"]

    assert arguments(shlex.split(command)) == arguments(saved["environment"]["command"])

    config, columns = read_config(NEW_NORMS), read_metrics(NEW_NORMS)
    final = columns["epoch"] == config.train.epochs

    def span(metric, batch):  # the lowest and highest of the norms' mean final accuracies, in percent
        means = [100 * columns[metric][final & (columns["norm"] == n) & (columns["batch_size"] == batch)].mean()
                 for n in config.sweep.norms]  # fmt: skip
        return f"{min(means):.1f}-{max(means):.1f}%"

    counts = steps(NEW_NORMS)
    (rate,) = set(columns["learning_rate"][columns["batch_size"] == 2])
    bn = claim(NEW_NORMS, "norm=batch batch_size=2 - norm=batch batch_size=128")
    gn_bn = claim(NEW_NORMS, "norm=group batch_size=2 - norm=batch batch_size=2")
    judged = {f.claim.text.split(": ", 1)[1]: f for f in findings(NEW_NORMS)}

    def verdict(contrast):  # after the interval's "]", so that "significant" is not found in "not significant"
        return "significant" if judged[contrast].significant() else "not significant"

    bn_verdict = verdict("norm=batch batch_size=2 - norm=batch batch_size=128")
    gn_bn_verdict = verdict("norm=group batch_size=2 - norm=batch batch_size=2")
    claims = max(f.family for f in judged.values())
    text = section(TUTORIAL, "## 3. Sweep a new norm")
    for stated in (
        f"five epochs ({round(seconds(saved))} s on 2 cores here",
        f"every norm trains {counts[128]:,} steps (the study's `train.min_steps`)",
        f"to {span('train_acc', 128).replace('100.0-100.0%', '100%')} train accuracy and {span('test_acc', 128)} test",
        f"at batch 2, {counts[2]:,} steps at the scaled rate {rate:g}",
        f"({span('train_acc', 2)} train accuracy, {span('test_acc', 2)} test)",
        f"BN at batch 2 against 128 is {bn[0]} points, 95% CI [{bn[1]}, {bn[2]}], {bn_verdict} after Holm's "
        f"correction over the sweep's {claims} claims",
        f"GN - BN at batch 2 is {gn_bn[0]} [{gn_bn[1]}, {gn_bn[2]}], {gn_bn_verdict}.",
    ):
        assert stated in text


def test_what_the_tutorial_quotes_of_compare_is_what_compare_prints(tmp_path, monkeypatch, capsys):
    """Section 3's compare, run where its first path is the committed study and its second the sweep's run: the
    block below the command is its output (the warning last: the CLI says it once the table is out), and the
    sentences after it state that output's differences, the runs' steps and which rows the study's tuning chose."""
    from normbench.reports.compare import compare, read_sweeps
    from normbench.results.claims import tune
    from normbench.results.reader import ResultsWarning
    from normbench.results.store import read_config, read_metrics

    text = TUTORIAL.read_text()
    command, quoted = re.search(r"^    (normbench compare .*)\n\n((?:(?:    .*)?\n)+)", text, re.M).groups()
    argv = shlex.split(command)[1:]
    study, sweep = argv[1:]
    assert study == "results/small_batch"
    (tmp_path / study).parent.mkdir()
    (tmp_path / study).symlink_to(ROOT / study)
    (tmp_path / sweep).parent.mkdir()
    (tmp_path / sweep).symlink_to(NEW_NORMS)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert [line[4:] for line in quoted.rstrip("\n").splitlines()] == [
        line.rstrip() for line in (printed.out + printed.err).splitlines()
    ]

    with pytest.warns(ResultsWarning, match=r"train\.epochs \(A: 15, B: 5\)"):
        table = compare(read_sweeps([ROOT / study, NEW_NORMS])).table
    lost = [-table["diff"][(table.norm == n) & (table.norm_batch == 2) & (table.directory == "B")].item()
            for n in ("batch", "group")]  # fmt: skip
    ours, theirs = steps(NEW_NORMS), steps(ROOT / study)
    assert ours[128] == theirs[128]
    stated = (
        f"since both train {ours[128]:,} steps (`train.min_steps`), and the two agree within their intervals; at "
        f"batch 2 the sweep's {ours[2]:,} steps against the study's {theirs[2]:,} cost BN {lost[0]:.1f} points and "
        f"GN {lost[1]:.1f}, paired by seed (BN's interval excludes 0, GN's does not)"
    )
    described = section(TUTORIAL, "## 3. Sweep a new norm")
    assert stated in described
    paired = table[table.directory == "B"]
    assert list(paired.significant[paired.norm_batch == 128]) == [False, False]  # "agree within their intervals"
    assert list(paired.significant[paired.norm_batch == 2]) == [True, False]

    chosen, _ = tune(read_metrics(ROOT / study), read_config(ROOT / study).report.tune)
    at_choice = set(zip(chosen["norm"], chosen["batch_size"], chosen["learning_rate"]))
    others = sum((n, b, r) not in at_choice for n, b, r in zip(paired.norm, paired.norm_batch, paired.learning_rate))
    assert f"chose another on validation for {others} of the {len(paired)}, so those rows" in described
