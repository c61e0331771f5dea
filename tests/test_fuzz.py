"""A property over `--set`: whatever the value, `normbench show` (which resolves and validates the config without
training) ends with exit status 0, 1 or 2 and never a traceback."""

import contextlib
import dataclasses
import io
import typing

import pytest
from conftest import study_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normbench.cli import main
from normbench.config import Config
from normbench.norms import NORMS


def config_keys(cls=Config, prefix=""):
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            yield from config_keys(hint, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


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
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "tiny.py"
    path.write_text(study_text())
    return path


def show(config_file, sets):
    args = ["show", str(config_file)] + [arg for key, value in sets for arg in ("--set", f"{key}={value}")]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse's own refusals
            code = e.code
    return code, err.getvalue()


def check(config_file, sets):
    code, err = show(config_file, sets)
    assert code in (0, 1, 2), (sets, code, err)
    assert "Traceback" not in err, (sets, err)
    if code:
        assert err.count("\n") == 1 or err.startswith("usage:"), (sets, err)


SETS = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3)
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@QUICK
@given(sets=SETS)
def test_any_set_value_is_shown_or_refused_in_one_line(config_file, sets):
    check(config_file, sets)


@pytest.mark.slow
@settings(QUICK, max_examples=600)
@given(sets=SETS)
def test_any_set_value_is_shown_or_refused_in_one_line_many_examples(config_file, sets):
    check(config_file, sets)
