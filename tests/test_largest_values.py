"""`normbench show` at the largest value that validation accepts for every count in the config answers, or refuses
in one line, within 1 GiB of resident memory and 10 CPU seconds (`sandbox.Sandbox`): nothing it computes (the
estimate's counts, the traced programs, the listed cells) grows with the numbers a user types. `show` with
train.epochs=369346492 once allocated 25 GiB, and with train.min_steps=1176740 traced for 503 s.

The fields are every integer field and every tuple of numbers in `normbench.config`, each set alone on a tiny study in
which it is read (model.depth in a ViT, norm.num_groups in GroupNorm). A count's largest value is 2**31 - 1 where
validation holds it to int32 and its own bound where it has a tighter one, and a number past any bound (10**30) is
shown too; a tuple of numbers holds one.
"""

import typing

import numpy as np
import pytest
from conftest import study_text
from sandbox import Sandbox

from normbench.config import Config, config_keys, field_hint
from normbench.models.vit import MAX_DEPTH

INT32 = 2**31 - 1
RESIDENT = 2**30  # the most resident memory any show may take (the child's peak since it started)
FLOAT32 = float(np.finfo(np.float32).max)
PAST_ANY_BOUND = 10**30
# The fields with a largest value of their own.
LARGEST = {"sweep.seeds": 2**32 - 1, "model.depth": MAX_DEPTH}
# What makes the tiny study read a field (its MLP reads no ViT option, its norms no group count).
READ_WITH = {
    **{f"model.{name}": ["sweep.models=vit"] for name in ("patch_size", "width", "depth", "heads", "mlp_ratio")},
    "model.channels": ["sweep.models=cnn"],
    "norm.num_groups": ["sweep.norms=group"],
    "norm.group_size": ["sweep.norms=group"],
    "norm.ghost_size": ["sweep.norms=ghost_batch"],
    "norm.renorm_train_steps": ["sweep.norms=batch_renorm"],
    "train.data_parallel": ["sweep.protocols=sync"],
    "train.diagnostics_at": [f"train.epochs={INT32}", "train.steps_per_epoch=1"],
    "report.tune_extensions": ["report.tune=learning_rate", "data.n_val=16"],
}


def counts():
    """The integer fields and the tuples of numbers (names and sentences are no counts: a name costs the one
    program it names, which a run compiles too)."""
    for key in config_keys(Config):
        hint = field_hint(key)
        is_tuple = typing.get_origin(hint) is tuple
        element = typing.get_args(hint)[0] if is_tuple else hint
        kinds = {element, *typing.get_args(element)}
        if int in kinds or (is_tuple and float in kinds):
            yield key, is_tuple, float in kinds


def largest_values():
    """(key, value) for every count: the values to show at."""
    for key, is_tuple, is_float in counts():
        values = [f"{FLOAT32!r}"] if is_float else [str(LARGEST.get(key, INT32)), str(PAST_ANY_BOUND)]
        yield from ((key, f"{value}," if is_tuple else value) for value in values)


@pytest.fixture(scope="module")
def limited(study):
    # The child's address space is capped at twice the resident memory allowed: a JAX process maps far more than
    # it touches (thread stacks, XLA's arenas), and a clean-clone CI run's child died at 1 GiB of mappings while
    # this machine's children peaked at 461 MiB resident.
    sandbox = Sandbox(memory_bytes=2 * RESIDENT, cpu_seconds=10)
    # A child's first command also starts JAX's backend and traces for the first time: 3.6 CPU s of the 8.5 that
    # model.depth=1000, the first case, took. A plain show pays that, so that each case's seconds are its own.
    assert sandbox.cli(["show", str(study)]) == (0, "")
    yield sandbox
    sandbox.close()
    print(f"show at the largest values: {sandbox.summary()}")  # shown by pytest -s or -rP


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("largest") / "tiny.py"
    path.write_text(study_text())
    return path


def test_the_counts_are_every_integer_field_and_tuple_of_numbers():
    keys = {key for key, _, _ in counts()}
    assert {"train.epochs", "train.min_steps", "model.depth", "model.hidden", "sweep.seeds"} <= keys
    assert {"train.landscape_steps", "sweep.learning_rates", "norm.num_groups", "report.tune_extensions"} <= keys
    assert not {"norm.epsilon", "sweep.norms", "norm.unbiased_running_var", "sweep.fields"} & keys


@pytest.mark.slow
@pytest.mark.parametrize(("key", "value"), list(largest_values()))
def test_show_at_the_largest_value_answers_within_limits(limited, study, key, value):
    sets = [*READ_WITH.get(key, []), f"{key}={value}"]
    code, err = limited.cli(["show", str(study), *[arg for pair in sets for arg in ("--set", pair)]])
    assert code in (0, 2), err
    assert "Traceback" not in err and (code == 0 or err.count("\n") == 1), err
    assert limited.worst["rss_bytes"] < RESIDENT, limited.summary()


def test_a_run_of_more_steps_than_int32_is_refused_naming_its_fields(study, capsys):
    """train.epochs=2**31-1 of 4 steps made 8,589,934,588 steps a run: a cosine schedule then failed to trace
    (OverflowError) and the optimizer's int32 step count would wrap."""
    from normbench.cli import main

    assert main(["show", str(study), "--set", f"train.epochs={INT32}", "--set", "train.schedule=cosine"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"train.epochs={INT32} make 8,589,934,588 steps a run ({INT32:,} epochs of 4 at batch 16)" in err
    assert err.rstrip().endswith("so they must stay below 2**31: lower train.epochs")
    assert main(["show", str(study), "--set", "train.epochs=1000", "--set", "train.min_steps=2147483600"]) == 2
    assert "lower train.epochs or train.min_steps" in capsys.readouterr().err


def test_a_vit_deeper_than_its_bound_is_refused(study, capsys):
    from normbench.cli import main

    depth = MAX_DEPTH + 1
    assert main(["show", str(study), "--set", "sweep.models=vit", "--set", f"model.depth={depth}"]) == 2
    assert f"model.depth must be at most {MAX_DEPTH:,} blocks, got {depth}" in capsys.readouterr().err
