"""Every check of a config that needs no data: names against the registries, option combinations, ranges,
and the swept fields. Raises ConfigError before anything is traced."""

from __future__ import annotations

import math
import typing

import numpy as np

from normbench.config import Config, ConfigError, config_keys, field_hint, get_field
from normbench.core.axes import fixed_reason, run_columns
from normbench.core.grid import cells, plan
from normbench.models import MODELS, check_model, check_pair
from normbench.norms import NORMS, check_norm
from normbench.protocols import PROTOCOLS, check_protocol
from normbench.reports.layer_figures import FIGURES as LAYER_FIGURES
from normbench.reports.plots import FIGURES
from normbench.results.claims import check_claim
from normbench.results.store import metric_columns
from normbench.results.tuning import check_extensions


def _closed(hint):
    """The values of a closed choice (a Literal, or a tuple of them), else None."""
    if typing.get_origin(hint) is tuple:
        return _closed(typing.get_args(hint)[0])
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


# Every field whose type is a closed choice (a Literal, or a tuple of them), with its values: the parser refuses
# others as it reads an override, and this holds a config built in Python to the same, whichever fields are added.
CLOSED_CHOICES = {key: valid for key in config_keys() if (valid := _closed(field_hint(key)))}


def validate(config: Config) -> None:
    sweep = config.sweep
    if config.name in ("", ".", "..") or "/" in config.name:
        raise ConfigError(f"name must be a file name (results go to results/<name>), got {config.name!r}")
    for name in ("models", "norms", "protocols", "batch_sizes", "init_scales", "seeds", "learning_rates"):
        _check_axis(f"sweep.{name}", getattr(sweep, name))
    for key, values in sweep.fields.items():
        reason = fixed_reason(key)
        if reason:
            raise ConfigError(f"{key} cannot be a sweep axis: {reason}")
        if typing.get_origin(field_hint(key)) is tuple:
            raise ConfigError(f"{key} holds several values, so it cannot be a sweep axis; sweep a field of one value")
        _check_axis(f"sweep.fields[{key!r}]", values)
    for protocol in sweep.protocols:
        check_protocol(protocol)
    for model in sweep.models:
        check_model(model, config.model)
    for norm in sweep.norms:
        check_norm(norm, config.norm, ())
    for protocol in sweep.protocols:
        PROTOCOLS[protocol].check(config)
    for claim in config.report.claims:
        check_claim(claim, metric_columns(config), run_columns(config))
    for axis in config.report.tune:
        if axis not in run_columns(config) or axis == "seed":
            raise ConfigError(f"report.tune names {axis!r}; valid: the value axes {', '.join(run_columns(config))}")
    if config.report.tune and not config.data.n_val:
        raise ConfigError("report.tune chooses on a validation set; hold one out with data.n_val")
    _check_distinct("train.after_training", config.train.after_training)
    _check_values(config)  # before its extensions, so that the grid's own errors read as its own
    check_extensions(config, _check_values)  # the values report.tune_extensions may add, checked as the grid's
    if not cells(config):  # e.g. only batch-dependent protocols (ghost, sync) over norms that use no batch
        raise ConfigError(
            f"the sweep has no cells: protocols {', '.join(sweep.protocols)} run none of norms {', '.join(sweep.norms)}"
        )
    # Each cell runs its own config: a swept option (say norm.num_groups) must fit each cell's layers.
    checked = set()
    for cell in cells(config):
        run = plan(config, cell).config
        if (cell.model, cell.norm, cell.fields) not in checked:
            checked.add((cell.model, cell.norm, cell.fields))
            check_model(cell.model, run.model)
            check_pair(cell.model, NORMS[cell.norm])
            check_norm(cell.norm, run.norm, MODELS[cell.model].widths(run.model))
            _check_values(run)
        NORMS[cell.norm].check_batch(run.norm, cell.batch_size)
    if config.train.diagnostics_at:
        without = [m for m in sweep.models if not MODELS[m].records_layers]
        if without:
            recording = ", ".join(name for name, spec in MODELS.items() if spec.records_layers)
            raise ConfigError(f"model {without[0]!r} records no layer diagnostics; models that do: {recording}")
    if any(not step > 0 for step in config.train.landscape_steps):
        raise ConfigError(f"train.landscape_steps are multiples of the learning rate, each > 0; got "
                          f"{', '.join(map(str, config.train.landscape_steps))}")  # fmt: skip
    for figure in config.figures:
        if figure not in {**FIGURES, **LAYER_FIGURES}:
            raise ConfigError(f"unknown figure {figure!r}; valid figures: {', '.join({**FIGURES, **LAYER_FIGURES})}")
        if figure in LAYER_FIGURES and not config.train.diagnostics_at:
            raise ConfigError(f"figure {figure!r} draws layer diagnostics: set train.diagnostics_at")
    if "landscape" in config.figures and not config.train.landscape_steps:
        raise ConfigError("the landscape figure draws the loss-landscape probes; set train.landscape_steps")


def ignored_options(config: Config, set_keys: list[str]) -> list[str]:
    """Sentences for the norm options that none of the swept norms reads, among those a user set (`set_keys`)
    and those swept (`sweep.fields`): a set one changes nothing, a swept one trains the same runs again. A
    config file's own settings are not questioned: a study may hold an option ready for a norm one `--set` away."""
    reads = {option for norm in config.sweep.norms for option in NORMS[norm].options}
    norms = ", ".join(config.sweep.norms)
    sentences = []
    for key in dict.fromkeys([*set_keys, *config.sweep.fields]):
        section, _, name = key.partition(".")
        if section == "norm" and name not in reads:
            effect = "its values train the same runs again" if key in config.sweep.fields else "it changes nothing"
            sentences.append(f"{key} is read by none of the norms swept ({norms}): {effect}")
    return sentences


def _check_axis(key: str, values) -> None:
    if len(values) == 0:
        raise ConfigError(f"{key} is empty; give at least one value")
    _check_distinct(key, values)


def _check_distinct(key: str, values) -> None:
    if len(set(values)) != len(values):
        raise ConfigError(f"{key} repeats a value: {values}")


def _check_values(config: Config) -> None:
    """Ranges of one cell's config, swept value fields checked at each of their values."""
    sweep, train = config.sweep, config.train
    optional = {  # None means "not set"; a number must be positive
        "train.steps_per_epoch": train.steps_per_epoch,
        "train.min_steps": train.min_steps,
        "train.lr_reference_batch": train.lr_reference_batch,
        "train.chunk_size": train.chunk_size,
        "train.checkpoint_every": train.checkpoint_every,
        "train.first_epoch_steps": train.first_epoch_steps,
        "data.n_train": config.data.n_train,
        "data.n_test": config.data.n_test,
    }
    positive = {
        "train.epochs": train.epochs,
        "train.eval_batch_size": train.eval_batch_size,
        "train.test_every": train.test_every,
        "train.train_acc_every": train.train_acc_every,
        "train.chunk_min_batch": train.chunk_min_batch,
        "train.precise_bn_examples": train.precise_bn_examples,
        "train.data_parallel": train.data_parallel,
        **{key: value for key, value in optional.items() if value is not None},
    }
    positive.update({f"sweep.batch_sizes ({b})": b for b in sweep.batch_sizes})
    positive.update({f"sweep.init_scales ({s})": s for s in sweep.init_scales})
    positive.update({f"sweep.learning_rates ({lr})": lr for lr in sweep.learning_rates})
    positive.update(_each(config, "norm.epsilon"))
    positive.update({f"model.hidden ({w})": w for w in config.model.hidden})
    positive.update({f"model.channels ({c})": c for c in config.model.channels})
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be positive, got {value}")
        _check_representable(key, value)
    for key, value in _each(config, "norm.momentum").items():
        if not 0 <= value < 1:
            raise ConfigError(f"{key} must be in [0, 1), got {value}")
    for key, value in _each(config, "train.momentum").items():
        if not 0 <= value < 1:
            raise ConfigError(f"{key} must be in [0, 1), got {value}")
        if value and train.optimizer == "adam":
            raise ConfigError(f"{key} is SGD's momentum; adam has its own, so it must be 0 with train.optimizer=adam")
    for key, value in _each(config, "norm.running_var_init").items():
        if not value >= 0:
            raise ConfigError(f"{key} must be at least 0, got {value}")
        _check_representable(key, value)
    for key, value in _each(config, "train.weight_decay").items():
        if not value >= 0:
            raise ConfigError(f"{key} must be at least 0, got {value}")
        _check_representable(key, value)
    if any(s < 0 or s >= 2**32 for s in sweep.seeds):
        raise ConfigError(f"sweep.seeds must be in [0, 2**32), got {sweep.seeds}")
    for key, valid in CLOSED_CHOICES.items():
        value = get_field(config, key)
        for item in value if isinstance(value, tuple) else (value,):
            if item not in valid:
                raise ConfigError(f"unknown {key} {item!r}; valid: {', '.join(valid)}")
    for key, value in _each(config, "train.warmup_fraction").items():
        if not 0 <= value < 1:
            raise ConfigError(f"{key} must be in [0, 1), got {value}")
    if train.min_steps is not None and train.steps_per_epoch is not None:
        raise ConfigError(
            "train.min_steps lengthens epochs of whole passes and train.steps_per_epoch fixes an epoch's steps: "
            "set one of them"
        )
    if config.data.n_val < 0:
        raise ConfigError(f"data.n_val must be at least 0, got {config.data.n_val}")
    if config.data.resample and not config.data.n_val:
        raise ConfigError(
            "data.resample draws each seed's training set from the n_train + n_val examples loaded; with "
            "data.n_val=0 there is nothing else to draw: hold out a validation set"
        )
    if train.diagnostics_at and any(not 0 <= e <= train.epochs for e in train.diagnostics_at):
        raise ConfigError(f"train.diagnostics_at must hold epochs in 0..{train.epochs}, got {train.diagnostics_at}")


def _check_representable(key: str, value) -> None:
    """Training runs in float32 and int32: a value must survive the conversion as the number it was."""
    if isinstance(value, int):
        if value >= 2**31:
            raise ConfigError(f"{key} must be below 2**31, got {value}")
    elif not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise ConfigError(f"{key} must be finite in float32, got {value}")
    elif value and not np.float32(value):
        raise ConfigError(f"{key} is {value}, which is 0 in float32; the smallest is {np.finfo(np.float32).tiny:.3g}")


def _each(config: Config, key: str) -> dict[str, float]:
    """The values a float field takes in the runs: its own, or each swept one (`key (value)` -> value)."""
    section, name = key.split(".")
    swept = config.sweep.fields.get(key)
    if swept is None:
        return {key: getattr(getattr(config, section), name)}
    return {f"{key} ({v})": v for v in swept}
