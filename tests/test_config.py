"""Overrides are typed, config files fail with one clear line, and validation happens before any tracing."""

import dataclasses
import re

import pytest
from conftest import tiny_config

from normbench.config import Config, ConfigError, apply_overrides, from_dict, load_config, set_fields, to_dict
from normbench.norms import NORMS
from normbench.validate import validate

VALID = ", ".join(NORMS)  # the error lists every registered norm


def test_overrides_are_parsed_to_the_fields_types():
    config = apply_overrides(
        Config(),
        [
            "train.epochs=5",
            "sweep.learning_rates=1",  # an int where floats are expected is fine
            "sweep.norms=batch,layer",
            "sweep.seeds=(3, 4)",
            "sweep.init_scales=0.5",
            "data.n_train=None",
            "norm.num_groups=4",
            "name=my-study",
        ],
    )
    assert config.train.epochs == 5
    assert config.sweep.learning_rates == (1.0,) and isinstance(config.sweep.learning_rates[0], float)
    assert config.sweep.norms == ("batch", "layer")
    assert config.sweep.seeds == (3, 4)
    assert config.sweep.init_scales == (0.5,)
    assert config.data.n_train is None and config.norm.num_groups == 4
    assert config.name == "my-study"


@pytest.mark.parametrize(
    "pair, message",
    [
        ("train.epoch=5", "unknown config key 'train.epoch': TrainConfig has epochs, steps_per_epoch"),
        ("bogus=1", "unknown config key 'bogus': Config has name, data"),
        ("train.epochs=five", "config key 'train.epochs' expects an integer, got 'five'"),
        ("train.epochs=2.5", "expects an integer, got 2.5"),
        ("sweep.seeds=a,b", "expects a comma-separated list of integers, got a,b"),
        ("sweep.norms=()", "sweep.norms is empty; give at least one value"),
        ("train.epochs", "--set expects key=value, got 'train.epochs'"),
        ("=3", "--set expects key=value"),
        ("train=3", "is a section"),
        ("train.epochs.x=3", "has no fields"),
    ],
)
def test_bad_overrides_say_what_is_wrong(pair, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        validate(apply_overrides(Config(), [pair]))
    assert "\n" not in str(e.value)


def test_none_is_a_word_where_the_field_takes_no_none_and_a_trailing_comma_makes_one_item():
    config = apply_overrides(Config(), ["sweep.norms=none", "norm.num_groups=none", "data.n_train=None"])
    assert config.sweep.norms == ("none",) and config.norm.num_groups is None and config.data.n_train is None
    assert apply_overrides(Config(), ["sweep.norms=batch,"]).sweep.norms == ("batch",)
    assert apply_overrides(Config(), ["sweep.norms=none,batch"]).sweep.norms == ("none", "batch")


def test_an_empty_tuple_is_a_valid_value_where_the_config_allows_it():
    config = apply_overrides(Config(), ["figures=()"])
    assert config.figures == ()
    assert from_dict(Config, to_dict(config)) == config


def test_config_round_trips_through_its_dict():
    config = load_config("configs/init_scale.py")
    assert from_dict(Config, to_dict(config)) == config


@pytest.mark.parametrize(
    "text, message",
    [
        ("def get_config(:\n", "syntax error at line 1"),
        ("x = 1\n", "defines no get_config() function"),
        ("def get_config():\n    return 3\n", "returned int, not a Config"),
        ("import nonexistent_module\n", "failed to run: ModuleNotFoundError"),
    ],
)
def test_malformed_config_files_fail_with_one_line(tmp_path, text, message):
    path = tmp_path / "bad.py"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.py")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sweep.norms": ("batch", "weird")}, re.escape(f"unknown norm 'weird'; valid norms: {VALID}")),
        ({"sweep.norms": ("group",), "norm.num_groups": 3}, "3 groups do not divide a layer of 8 channels"),
        ({"sweep.seeds": ()}, "sweep.seeds is empty"),
        ({"sweep.seeds": (1, 1)}, "sweep.seeds repeats a value"),
        ({"sweep.learning_rates": (0.0,)}, r"sweep.learning_rates \(0.0\) must be positive"),
        ({"sweep.batch_sizes": (-4,)}, "must be positive"),
        ({"train.epochs": 0}, "train.epochs must be positive"),
        ({"norm.momentum": 1.0}, r"norm.momentum must be in \[0, 1\)"),
        ({"train.sampling": "bootstrap"}, "unknown train.sampling 'bootstrap'; valid: permutation, replacement"),
        ({"sweep.models": ("resnet9000",)}, "unknown model 'resnet9000'; valid models: mlp, cnn"),
        ({"sweep.protocols": ("sgd", "async")}, "unknown sweep.protocols 'async'; valid: sgd, ghost, per_device, sync"),
        ({"sweep.protocols": ("ghost",), "sweep.batch_sizes": (4, 6)}, "each must divide it"),
        ({"model.init": "orthogonal"}, "unknown model.init 'orthogonal'; valid: std, he, xavier"),
        ({"figures": ("pie",)}, "unknown figure 'pie'"),
    ],
)
def test_validate_rejects_what_cannot_run(changes, message):
    config = tiny_config()
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        if section:
            sub = dataclasses.replace(getattr(config, section), **{name: value})
            config = dataclasses.replace(config, **{section: sub})
        else:
            config = dataclasses.replace(config, **{name: value})
    with pytest.raises(ConfigError, match=message):
        validate(config)


@pytest.mark.parametrize(
    "path",
    [
        "configs/init_scale.py",
        "configs/small_batch.py",
        "configs/small_batch_cifar10.py",
        "configs/sync_bn.py",
        "configs/transformer_norms.py",
    ],
)
def test_the_studies_configs_are_valid(path):
    validate(load_config(path))


@pytest.mark.parametrize("path", ["configs/init_scale.py", "configs/small_batch.py"])
def test_every_registered_norm_is_one_set_away_in_the_studies(path):
    config = apply_overrides(load_config(path), [f"sweep.norms={','.join(NORMS)}"])
    validate(config)


@pytest.mark.parametrize(
    "key", ["train.chunk_size", "train.steps_per_epoch", "data.n_train", "train.lr_reference_batch"]
)
def test_optional_counts_may_be_none_but_not_zero(key):
    validate(apply_overrides(tiny_config(), [f"{key}=None"]))
    with pytest.raises(ConfigError, match=f"{key} must be positive, got 0"):
        validate(apply_overrides(tiny_config(), [f"{key}=0"]))


@pytest.mark.parametrize("key", ["model.norm_placement", "train.sampling", "train.precision", "train.optimizer",
                                 "train.schedule", "train.precise_bn_variance"])  # fmt: skip
def test_validate_refuses_a_closed_choice_outside_its_literal_in_a_config_built_in_python(key):
    """dataclasses.replace skips the parser: validate holds every Literal field to its values all the same."""
    section, _, name = key.partition(".")
    config = tiny_config()
    config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{name: "x"})})
    with pytest.raises(ConfigError, match=re.escape(f"unknown {key} 'x'; valid: ")):
        validate(config)


def test_a_closed_choice_is_one_literal_that_the_registries_and_the_parser_share():
    """Each closed string field is a Literal: the code that implements the choices has exactly its values, and a
    value outside it is refused while the override is parsed, before the config exists."""
    import typing

    from normbench.config import Optimizer, Placement, Precision
    from normbench.core.train import OPTIMIZERS, PRECISIONS
    from normbench.models.vit import PLACEMENTS

    assert tuple(OPTIMIZERS) == typing.get_args(Optimizer)
    assert tuple(PRECISIONS) == typing.get_args(Precision)
    assert PLACEMENTS == typing.get_args(Placement)
    config = tiny_config()
    for key, value, valid in (
        ("train.precision", "float16", "float32, float64"),
        ("model.norm_placement", "sandwich", "pre, post"),
        ("train.optimizer", 3, "sgd, adam"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"unknown {key} {value!r}; valid: {valid}")):
            set_fields(config, {key: value})
    with pytest.raises(ConfigError, match=re.escape("unknown train.sampling 'bootstrap'; valid: permutation, repl")):
        apply_overrides(config, ["train.sampling=bootstrap"])
    assert apply_overrides(config, ["train.precision=float64"]).train.precision == "float64"
