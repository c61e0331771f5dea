"""Properties over `--set` values, config files and IDX headers: whatever the input, `normbench show` (which
resolves and validates the config and reads the data without training) ends with exit status 0, 1 or 2 and never
a traceback; where it refuses, `normbench run` refuses in one line too and leaves its output directory as it was.

Every command runs in a sandbox (`sandbox.Sandbox`): within 2 GiB of address space and 60 CPU seconds, or its
example fails, named, instead of the machine's memory running out under the whole pytest worker.
"""

import shutil
import struct

import pytest
from conftest import TINY_STUDY, snapshot, study_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox import Sandbox
from test_data import write_idx_set

from normbench.config import config_keys
from normbench.norms import NORMS

KEYS = sorted(config_keys())
# What a user (or a typo) might write: numbers at the edges of every range, words the registries know, junk.
NUMBERS = st.one_of(
    st.integers(-2, 64).map(str),  # mostly plausible, so that examples get past parsing into validation
    st.sampled_from(["0.1", "0.5", "1.0", "0.9", "1e-5"]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e-50", "1e999", "-0.0", "nan", "inf", "2**31", "0x10", "1_000"]),
)
WORDS = st.sampled_from([*NORMS, "none", "None", "true", "false", "mlp", "cnn", "ghost", "sgd", "adam", "", " "])
ATOMS = st.one_of(NUMBERS, WORDS, st.text(max_size=6))
VALUES = st.one_of(ATOMS, st.lists(ATOMS, min_size=0, max_size=3).map(",".join))


@pytest.fixture(scope="module")
def sandbox():
    limits = Sandbox(memory_bytes=2 * 2**30, cpu_seconds=60)
    yield limits
    limits.close()
    print(f"fuzz sandbox: {limits.summary()}")  # the worst any example took, shown by pytest -s or -rP


@pytest.fixture(scope="module")
def cli(sandbox):
    """`normbench ARGS` -> (exit status, stderr), in the module's sandbox."""
    return sandbox.cli


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "tiny.py"
    path.write_text(study_text())
    return path


def show(cli, config_file, sets):
    return cli(["show", str(config_file)] + [arg for key, value in sets for arg in ("--set", f"{key}={value}")])


def check(cli, config_file, sets):
    code, err = show(cli, config_file, sets)
    assert code in (0, 1, 2), (sets, code, err)
    assert "Traceback" not in err, (sets, err)
    if code:
        assert err.count("\n") == 1 or err.startswith("usage:"), (sets, err)


SETS = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3)
QUICK = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@QUICK
@given(sets=SETS)
def test_any_set_value_is_shown_or_refused_in_one_line(cli, config_file, sets):
    check(cli, config_file, sets)


@pytest.mark.slow
@settings(QUICK, max_examples=600)
@given(sets=SETS)
def test_any_set_value_is_shown_or_refused_in_one_line_many_examples(cli, config_file, sets):
    check(cli, config_file, sets)


# A config file's get_config, as a user might break it: odd return values, odd field values, exceptions, exits.
FIELD_VALUES = st.sampled_from(
    ["()", "None", "-1", "0", "10**30", "1e308", "float('nan')", "'abc'", "[1, 2]", "(0.1,)", "((),)", "{}", "True"]
)
FIELDS = st.sampled_from(
    ["sweep.seeds", "sweep.norms", "sweep.batch_sizes", "sweep.init_scales", "sweep.learning_rates", "train.epochs",
     "model.hidden", "data.n_train", "norm.epsilon", "name", "figures"]
)  # fmt: skip
BODIES = st.one_of(
    st.sampled_from([
        "return None", "return 42", "return ()", "return 'tiny'", "return Config", "raise ValueError('no')",
        "raise SystemExit(0)", "import sys; sys.exit(3)", "return 1 / 0", "import no_such_module",
        "return get_config()", "return dataclasses.replace(base(), sweep=None)",
    ]),
    st.tuples(FIELDS, FIELD_VALUES).map(lambda fv: "return with_field(base(), {!r}, {})".format(*fv)),
)  # fmt: skip
PREAMBLE = (
    TINY_STUDY.replace("def get_config():", "def base():")
    + """
import dataclasses


def with_field(config, dotted, value):
    section, _, name = dotted.rpartition(".")
    if not section:
        return dataclasses.replace(config, **{name: value})
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{name: value})})


"""
)


def config_source(body: str, arguments: str) -> str:
    return PREAMBLE + f"def get_config({arguments}):\n    {body}\n"


@pytest.fixture(scope="module")
def earlier_results(tmp_path_factory):
    """An output directory holding files a failed run must leave alone (a plain file stands in for results)."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    return out


def refused_alike(cli, config_file, sets, out):
    """Where `show` refuses, `run` refuses in one line and leaves `out` as it was; `show` stands in for `run`
    where it accepts, since `run` would then train."""
    code, err = show(cli, config_file, sets)
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code:
        assert err.count("\n") == 1, err
        before = snapshot(out)
        settings_args = [arg for key, value in sets for arg in ("--set", f"{key}={value}")]
        run_code, run_err = cli(["run", str(config_file), "--out", str(out), "--quiet", *settings_args])
        assert run_code in (1, 2) and run_err.count("\n") == 1 and "Traceback" not in run_err, run_err
        assert snapshot(out) == before
    return code


CONFIG_FILES = st.tuples(BODIES, st.sampled_from(["", "x", "*args", "x=1"]))


def check_config_file(cli, tmp_path_factory, earlier_results, case):
    body, arguments = case
    path = tmp_path_factory.mktemp("config") / "fuzzed.py"
    path.write_text(config_source(body, arguments))
    refused_alike(cli, path, [], earlier_results)


@QUICK
@given(case=CONFIG_FILES)
def test_any_config_file_is_shown_or_refused_in_one_line(cli, tmp_path_factory, earlier_results, case):
    check_config_file(cli, tmp_path_factory, earlier_results, case)


@pytest.mark.slow
@settings(QUICK, max_examples=500)
@given(case=CONFIG_FILES)
def test_any_config_file_is_shown_or_refused_in_one_line_many_examples(cli, tmp_path_factory, earlier_results, case):
    check_config_file(cli, tmp_path_factory, earlier_results, case)


# An IDX file's header as a damaged or hostile file might have it: any magic, any dimension count and sizes, and
# a body shorter or longer than the header promises.
IDX_FILES = st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
HEADERS = st.tuples(
    IDX_FILES,
    st.one_of(st.sampled_from([0x801, 0x803, 0x802, 0x80D, 0x0]), st.integers(0, 2**32 - 1)),
    st.lists(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)), min_size=0, max_size=4),
    st.integers(0, 4096),
)


@pytest.fixture(scope="module")
def idx_study(tmp_path_factory):
    """A tiny study over an IDX data set whose files the examples replace one at a time."""
    root = tmp_path_factory.mktemp("idx")
    write_idx_set(root / "data", n_train=40, n_test=20, shape=(6, 6))
    config = root / "tiny.py"
    config.write_text(TINY_STUDY.replace('source="mnist5k", n_train=64, n_test=32', f"source='idx:{root / 'data'}'"))
    return config, root / "data"


def check_idx_header(cli, idx_study, earlier_results, header, tmp_path_factory):
    config, data = idx_study
    name, magic, dims, body = header
    damaged = tmp_path_factory.mktemp("damaged") / "data"
    shutil.copytree(data, damaged)
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + bytes(body)
    (damaged / name).write_bytes(raw)
    # A batch no data set here can fill: every run stops after reading the data, never training.
    sets = ["--set", f"data.source=idx:{damaged}", "--set", "sweep.batch_sizes=100000"]
    before = snapshot(earlier_results)
    code, err = cli(["run", str(config), "--out", str(earlier_results), "--quiet", *sets])
    assert code in (1, 2) and err.count("\n") == 1 and "Traceback" not in err, (header, err)
    assert snapshot(earlier_results) == before


@QUICK
@given(header=HEADERS)
def test_any_idx_header_is_read_or_refused_in_one_line(cli, idx_study, earlier_results, header, tmp_path_factory):
    check_idx_header(cli, idx_study, earlier_results, header, tmp_path_factory)


@pytest.mark.slow
@settings(QUICK, max_examples=500)
@given(header=HEADERS)
def test_any_idx_header_is_read_or_refused_in_one_line_many_examples(
    cli, idx_study, earlier_results, header, tmp_path_factory
):
    check_idx_header(cli, idx_study, earlier_results, header, tmp_path_factory)
