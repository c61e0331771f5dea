"""The scorecard's numbers: each measure's value per seed (or per timing round) from a test's results, its mean
and 95% interval, and its paired difference from BatchNorm and LayerNorm with a Holm-adjusted verdict.

A measure reads one norm's results of one test (`metrics.csv` as columns, at the values tuned on validation where
the test tunes). Two norms' runs of the same seed share their initial draw, minibatches and data
(`normbench.core.train`), so a difference is paired by seed, as a study's claims are, with the same statistics:
`normbench.results.claims`' t test and Holm's step-down adjustment, `normbench.results.stats`' interval. The
family Holm adjusts over is one norm's comparisons (every measure against each reference): a norm's verdicts do
not change when another norm joins the scorecard.

A batch-independent norm's small-batch drop is 0 by construction: its output ignores how the batch is grouped,
so its runs at g = 4 and at 128 would be the same runs. It is not trained; its difference from a reference is
minus that reference's drop, seed by seed, and from another batch-independent norm there is none to test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from normbench.config import Config
from normbench.core.axes import EPOCH
from normbench.results.claims import FAMILY_ERROR, holm, t_test_p, tune
from normbench.results.stats import final_epoch, mean_ci
from normbench.scoring.battery import BY_NAME, COST_BY_TEST, EARLY_EPOCH, EARLY_SCALE, REACHED, REFERENCES

# A measure's values from one norm's results: {seed or round: value}, and how many seeds a diverged run dropped.
PerSeed = tuple[dict[int, float], int]


def _alive(rows: dict, metric: str) -> PerSeed:
    """`metric` per seed over `rows` (one run per seed), leaving out the seeds whose run diverged."""
    alive = rows["diverged"] == 0
    return dict(zip(rows["seed"][alive].tolist(), rows[metric][alive].tolist())), int((~alive).sum())


def reached_scales(columns: dict, config: Config) -> PerSeed:
    """Per seed, the init scales at which the run ends at REACHED train accuracy or above (a diverged run does not)."""
    final = final_epoch(columns)
    reached = (final["train_acc"] >= REACHED) & (final["diverged"] == 0)
    return {int(s): float(reached[final["seed"] == s].sum()) for s in np.unique(final["seed"])}, 0


def early_accuracy(columns: dict, config: Config) -> PerSeed:
    """Per seed, train accuracy after EARLY_EPOCH epochs (11 steps) at init scale EARLY_SCALE."""
    rows = (columns[EPOCH] == EARLY_EPOCH) & np.isclose(columns["init_scale"], EARLY_SCALE, rtol=1e-3)
    return _alive({k: v[rows] for k, v in columns.items()}, "train_acc")


def _tuned_final(columns: dict, config: Config) -> dict:
    return final_epoch(tune(columns, config.report.tune)[0])


def small_batch_drop(columns: dict, config: Config) -> PerSeed:
    """Per seed, test accuracy at the smallest ghost group minus at the largest, each at its own tuned rate."""
    final = _tuned_final(columns, config)
    small, large = (_alive({k: v[final["ghost_size"] == g] for k, v in final.items()}, "test_acc")[0]
                    for g in (min(config.sweep.batch_sizes), max(config.sweep.batch_sizes)))  # fmt: skip
    seeds = sorted(set(small) & set(large))
    return {s: small[s] - large[s] for s in seeds}, len(np.unique(final["seed"])) - len(seeds)


def test_accuracy(columns: dict, config: Config) -> PerSeed:
    return _alive(_tuned_final(columns, config), "test_acc")


@dataclass(frozen=True)
class Measure:
    name: str  # scorecard.csv's `test` column
    test: str  # the battery test whose results it reads (`cost`: the cost test's timings)
    title: str
    unit: str  # how scorecard.md writes a value
    scale: float  # values are written times this: 100 for accuracies, in points
    per_seed: Callable[[dict, Config], PerSeed] | None  # None: the cost test's rounds
    by_construction: bool = False  # 0 for a batch-independent norm (the small-batch drop)

    @property
    def cost_model(self) -> str:
        """The battery test whose model a cost measure times."""
        return self.name.removesuffix("_cost")

    def skips(self, norm: str) -> str:
        """Why `norm` has no value of this measure, or "" (`battery.Test.skips`)."""
        return COST_BY_TEST[self.cost_model].skips(norm) if self.per_seed is None else BY_NAME[self.test].skips(norm)


MEASURES = (
    Measure("init_scale_reached", "init_scale", "init scales reaching 90% train acc.", "scales", 1, reached_scales),
    Measure("init_scale_early", "init_scale", "train acc. after 11 steps at std 0.0074", "%", 100, early_accuracy),
    Measure(
        "small_batch_drop",
        "small_batch",
        "test acc. at g = 4 minus at 128 (MLP)",
        "points",
        100,
        small_batch_drop,
        by_construction=True,
    ),
    Measure("cnn_acc", "cnn", "CNN test acc. at batch 32", "%", 100, test_accuracy),
    Measure("vit_acc", "vit", "ViT test acc. (pre-norm)", "%", 100, test_accuracy),
    Measure("cnn_cost", "cost", "CNN step time / no norm's", "x", 1, None),
    Measure("vit_cost", "cost", "ViT step time / no norm's", "x", 1, None),
)


@dataclass(frozen=True)
class Score:
    """One norm's values of one measure: per seed (or timing round), or 0 by construction (`values` None)."""

    values: dict[int, float] | None
    dropped: int = 0  # seeds left out: a run diverged
    not_applicable: str = ""  # why the norm cannot take the test (then `values` is None): no value, not a 0

    def at(self, seeds) -> np.ndarray:
        return np.array([self.values[s] for s in seeds]) if self.values is not None else np.zeros(len(seeds))

    @property
    def mean_ci(self) -> tuple[float, float, int]:
        """(mean, half-width of the 95% interval, n); a score by construction is exact: 0, 0, and n 0."""
        if self.not_applicable:
            return float("nan"), float("nan"), 0
        if self.values is None:
            return 0.0, 0.0, 0
        if not self.values:
            return float("nan"), float("nan"), 0
        return (*mean_ci(list(self.values.values())), len(self.values))


@dataclass(frozen=True)
class Difference:
    """A norm's score minus a reference's, paired by seed; `adjusted_p` is Holm's over the norm's family."""

    mean: float
    half_width: float
    seeds: int
    p: float
    adjusted_p: float = float("nan")

    def significant(self) -> bool:
        return bool(self.adjusted_p < FAMILY_ERROR)


def paired(score: Score, reference: Score) -> Difference | None:
    """`score` - `reference` over the seeds both have; None where both are 0 by construction or either has no
    value (nothing to test)."""
    if score.not_applicable or reference.not_applicable or (score.values is None and reference.values is None):
        return None
    mine = score.values if score.values is not None else reference.values
    theirs = reference.values if reference.values is not None else score.values
    seeds = sorted(set(mine) & set(theirs))
    contrast = score.at(seeds) - reference.at(seeds)
    mean, half = mean_ci(contrast) if len(contrast) else (float("nan"), float("nan"))
    return Difference(mean, half, len(seeds), t_test_p(contrast))


def compare(scores: dict[str, dict[str, Score]], norm: str) -> dict[tuple[str, str], Difference]:
    """`norm`'s paired differences, (measure, reference) -> Difference, for the measures paired by seed and the
    references other than itself, with p Holm-adjusted over them all (the differences with a p, that is)."""
    differences = {}
    for measure in MEASURES:
        if measure.per_seed is None or measure.name not in scores[norm]:
            continue
        for reference in REFERENCES:
            if reference != norm and measure.name in scores.get(reference, {}):
                found = paired(scores[norm][measure.name], scores[reference][measure.name])
                if found is not None:
                    differences[measure.name, reference] = found
    tested = [key for key, d in differences.items() if np.isfinite(d.p)]
    for key, adjusted in zip(tested, holm([differences[key].p for key in tested])):
        d = differences[key]
        differences[key] = Difference(d.mean, d.half_width, d.seeds, d.p, float(adjusted))
    return differences
