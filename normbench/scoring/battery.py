"""The scorecard's battery: five small tests of what normalization is claimed to give, each an ordinary sweep of
the engine on a `Config` derived here, and only here, from a study config under `configs/`.

- `init_scale`, from `init_scale.py` (the textbook's MLP, 16 init scales, 3 seeds, float64): the init scales at
  which the net ends at >= 90% train accuracy, and its train accuracy after 11 steps at std 0.0074;
- `small_batch`, from `images_per_statistic.py`, its MLP arm (SGD batch 128, BN's statistics over ghost groups of
  4 and of 128, 5 seeds): test accuracy at g = 4 minus at 128, each at its rate tuned on validation; 0 by
  construction for a batch-independent norm, which is not trained;
- `cnn`, from `small_batch.py` (the 8-16-32 CNN at batch 32, 15 epochs, 5 seeds): test accuracy at the rate tuned
  on validation;
- `vit`, from `transformer_norms.py` (the 2-block ViT, pre-norm, warmup 0.2, 5 seeds): likewise;
- `cost`, the `cnn` and `vit` tests' models at one rate, float32: a training step's time over no norm's, the two
  alternated in one process (`normbench.scoring.cost`).

Every norm gets the same options: the study's, and GroupNorm's 4 groups in every test (4 divides every layer of
the three models). `quick` shrinks every test to a few seconds of training (tiny models, 64 images, 2 seeds,
2 epochs), for tests of the machinery; its numbers mean nothing.

Cost on 2 cores (`normbench scorecard --show` prints it for the norms asked): see `normbench.scoring`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normbench.config import Config, ConfigError, load_config, set_fields, to_dict
from normbench.models import check_pair
from normbench.norms import NORMS

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
# The textbook's point: after 11 steps (epoch 2 of its 1 + 10 x 19 steps) at std 0.0074, BN is at 33-58% and the
# plain net at one class (README, the init-scale study).
EARLY_SCALE = float(np.logspace(0, -4, 16)[7])
EARLY_EPOCH = 2
# "Reaches": ends at this train accuracy or above.
REACHED = 0.9
# Every test names these, so that every norm is paired with BatchNorm and LayerNorm.
REFERENCES = ("batch", "layer")
# The cost test's reference: the same model with no norm.
NO_NORM = "none"
# What no sweep reads beyond the per-norm results: the battery's own figures and claims are the scorecard's.
UNREPORTED = {"report.claims": (), "figures": ()}
BY_CONSTRUCTION = "0 by construction: batch-independent, not trained"
NOT_APPLICABLE = "not applicable"
TINY_DATA = {"data.n_train": 64, "data.n_test": 64}
TINY_TRAINING = {"sweep.seeds": (0, 1), "train.epochs": 2, "train.test_every": 2, "report.tune_extensions": 0}


@dataclass(frozen=True)
class Test:
    name: str  # its directory under the scorecard's out, and its column in scorecard.csv
    study: str  # the file under configs/ it derives from
    changes: dict  # `set_fields` of the study's config
    quick: dict  # then these, for the tiny battery
    figures: tuple[str, ...]  # what its results directory over every norm draws
    batch_dependent_only: bool = False  # a batch-independent norm scores 0 by construction, untrained

    def config(self, quick: bool = False) -> Config:
        """The test's config, over the study's norms until `for_norms` names the scored ones."""
        config = set_fields(load_config(CONFIGS / self.study), {**self.changes, **UNREPORTED})
        if not quick:
            return dataclasses.replace(config, name=f"scorecard_{self.name}")
        # A name of its own: this machine's calibration keeps each name's latest run, which should stay the full one.
        return dataclasses.replace(set_fields(config, self.quick), name=f"scorecard_quick_{self.name}")

    def skips(self, norm: str) -> str:
        """Why `norm` does not take this test, or "" when it does."""
        if self.batch_dependent_only and not NORMS[norm].batch_dependent:
            return BY_CONSTRUCTION
        return inapplicable(self.study_models(), norm)

    def trains(self, norm: str) -> bool:
        return not self.skips(norm)

    def study_models(self) -> tuple[str, ...]:
        return self.config().sweep.models


def inapplicable(models: tuple[str, ...], norm: str) -> str:
    """Why a norm cannot run on one of `models` whatever its options (the ViT takes no +ws norm), or ""."""
    for model in models:
        try:
            check_pair(model, NORMS[norm])
        except ConfigError as e:
            return f"{NOT_APPLICABLE}: {e}"
    return ""


TESTS = (
    Test(
        "init_scale",
        "init_scale.py",
        {},
        {
            **TINY_DATA,
            **TINY_TRAINING,
            "model.hidden": (16, 16),
            "sweep.batch_sizes": (16,),
            "sweep.init_scales": (1.0, EARLY_SCALE),
            "train.steps_per_epoch": 2,
        },
        ("init_scale",),
    ),
    Test(
        "small_batch",
        "images_per_statistic.py",
        # The study's 10 seeds halved, to fit every norm into the battery's time: its drop at g = 4 was
        # -1.7 points [-2.3, -1.2] over 10, wide of 0 by more than the interval 5 seeds add.
        {
            "sweep.models": ("mlp",),
            "sweep.batch_sizes": (4, 128),
            "sweep.seeds": tuple(range(5)),
            "train.diagnostics_at": (),
        },
        {
            **TINY_DATA,
            **TINY_TRAINING,
            "data.n_val": 32,
            "model.hidden": (16, 16),
            "sweep.batch_sizes": (4, 16),
            "sweep.learning_rates": (0.4, 0.8),
            "train.min_steps": None,
            "train.precise_bn_examples": 32,
        },
        ("error_vs_batch",),
        batch_dependent_only=True,
    ),
    Test(
        "cnn",
        "small_batch.py",
        # The training set's accuracy after every epoch, and every seed vmapped together, as the committed
        # scorecard's runs were trained before the study took every 5th epoch's and one seed at a time (and, below
        # batch 8, all of them again): another cadence or chunk rule would be another battery (other bits, or
        # another battery.json), and every scorecard would train anew.
        {"sweep.batch_sizes": (32,), "train.train_acc_every": 1, "train.chunk_size": None, "train.chunk_min_batch": 1},
        {
            **TINY_DATA,
            **TINY_TRAINING,
            "data.n_val": 32,
            "model.channels": (4, 8),
            "sweep.batch_sizes": (8,),
            "sweep.learning_rates": (0.8, 1.6),
            "train.min_steps": None,
            "train.precise_bn_examples": 32,
        },
        ("final_accuracy",),
    ),
    Test(
        "vit",
        "transformer_norms.py",
        {
            "sweep.fields": {},
            "model.norm_placement": "pre",
            "train.warmup_fraction": 0.2,
            "train.diagnostics_at": (),
            "norm.num_groups": 4,
        },
        {
            **TINY_DATA,
            **TINY_TRAINING,
            "data.n_val": 32,
            "model.width": 8,
            "model.depth": 1,
            "model.heads": 2,
            "sweep.batch_sizes": (16,),
            "sweep.learning_rates": (0.006, 0.02),
            "train.precise_bn_examples": 32,
        },
        ("final_accuracy",),
    ),
)
TEST_NAMES = tuple(test.name for test in TESTS)
BY_NAME = {test.name: test for test in TESTS}


@dataclass(frozen=True)
class CostModel:
    """One model of the cost test: the `test`'s config at one run, its epoch `steps` long."""

    test: str
    steps: int  # steps per timed epoch: long enough that one timing is well above the clock's and dispatch's noise
    quick_steps: int

    def skips(self, norm: str) -> str:
        """Why `norm` is not timed on this model, or ""."""
        return inapplicable(BY_NAME[self.test].study_models(), norm)


COST_MODELS = (CostModel("cnn", 100, 2), CostModel("vit", 30, 2))
COST_BY_TEST = {model.test: model for model in COST_MODELS}
# The cost test's training set, in batches: enough that its steps do not fit one batch over and over, few enough
# that evaluating it after the epoch's steps is about 1% of their work.
COST_BATCHES = 4
# Timings of each norm against no norm, alternated; the interval is over these.
COST_ROUNDS, QUICK_COST_ROUNDS = 5, 2


def cost_config(model: CostModel, quick: bool = False) -> Config:
    """The `model.test`'s config trained one run at a time, float32, with a training set of `COST_BATCHES` batches
    sampled with replacement: an epoch is `steps` steps and an evaluation of those few batches, all the timed
    program does beyond its steps (the held-out evaluation is due only at the last of 2 epochs, never timed)."""
    config = BY_NAME[model.test].config(quick)
    return set_fields(
        config,
        {
            "data.n_train": COST_BATCHES * config.sweep.batch_sizes[0],
            "data.n_val": 0,
            "data.resample": False,
            "sweep.seeds": (0,),
            "sweep.learning_rates": config.sweep.learning_rates[:1],
            "report.tune": (),
            "train.precision": "float32",
            "train.sampling": "replacement",
            "train.min_steps": None,
            "train.steps_per_epoch": model.quick_steps if quick else model.steps,
            "train.epochs": 2,
            "train.test_every": 2,
        },
    )


def for_norms(config: Config, norms: tuple[str, ...]) -> Config:
    return set_fields(config, {"sweep.norms": norms})


def identity(quick: bool) -> dict:
    """What makes two batteries the same: every test's config and the cost test's settings, as JSON values.
    The scorecard's out records it (`battery.json`), and refuses to mix another battery's results with it."""
    return {
        "tests": {test.name: to_dict(for_norms(test.config(quick), ())) for test in TESTS},
        "cost": {m.test: to_dict(for_norms(cost_config(m, quick), ())) for m in COST_MODELS},
        "cost_rounds": QUICK_COST_ROUNDS if quick else COST_ROUNDS,
    }
