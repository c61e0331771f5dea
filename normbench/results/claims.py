"""Headline comparisons stated from the data: a claim is a contrast of runs paired by seed, reported with its
mean, its 95% interval over seeds and a verdict that holds for the study's claims as one family
(`ReportConfig.claims`).

    "test_acc, model=cnn: norm=batch batch_size=128 - norm=batch batch_size=2 - norm=group batch_size=128
     + norm=group batch_size=2"

is BN's drop from batch 128 to 2 minus GN's, per seed. A term may name its own metric, so that a claim contrasts
two evaluations of the same runs:

    "test_acc, norm=batch, ghost_size=4: metric=test_acc_batch_stats - metric=test_acc"

(the head's metric is that of every term that names none). A claim's metrics are all accuracies (a column named
with `acc`: test_acc, test_acc_batch_stats, ...), reported in points, or none is. A claim may end with `< 0` or
`> 0`, the sign that the study's reference (a paper) reports: the finding then says whether these runs agree, show
no difference, or show the opposite. What a paper says of it may follow a `#`; summary.md states it beside the
finding. Runs pair by seed: every term must select exactly one run per seed once the claim's shared `column=value`
pairs are applied (the last epoch unless one is given). A seed with a diverged run in any term is left out of the
contrast and counted.

A study states many claims, and some of those that hold no difference would show one by chance: `evaluate_all`
judges them as one family. Each claim's two-sided paired t test (the t statistic its interval inverts) gives a
p-value, Holm's step-down procedure adjusts those of the claims with at least 2 seeds, and a claim is significant
where its adjusted p is below `FAMILY_ERROR`: the chance that any claim without a difference is called
significant stays under 5%. The interval printed is the unadjusted one.

`tune` picks value axes on the validation set (`ReportConfig.tune`) before any claim or table reads the runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from normbench.config import ConfigError
from normbench.core.axes import EPOCH, key_columns
from normbench.results.stats import mean_ci

_TERM = re.compile(r"\s*([+-])\s*")
# A claim's trailing "< 0" or "> 0": the sign its reference reports.
EXPECTED_SIGN = re.compile(r"\s*([<>])\s*0\s*$")
# A term's own metric, `metric=<name>`, in place of the head's.
METRIC = "metric"
# The family-wise error rate that Holm's procedure holds a study's claims to.
FAMILY_ERROR = 0.05


class ClaimError(ConfigError):
    """A claim that cannot be read or decided; `reason` says why without repeating the claim."""

    def __init__(self, claim: str, reason: str):
        super().__init__(f"claim {claim!r}: {reason}")
        self.reason = reason


class Term(NamedTuple):
    sign: int  # +1 or -1
    pairs: tuple[tuple[str, str], ...]  # column=value
    metric: str  # the claim's, unless the term names its own


@dataclass(frozen=True)
class Claim:
    text: str
    metric: str
    where: tuple[tuple[str, str], ...]
    terms: tuple[Term, ...]
    expected: int = 0  # the reference's sign of the contrast (`< 0`: -1, `> 0`: +1), 0 where the claim states none

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the claim reads: the head's, then the terms' own."""
        return tuple(dict.fromkeys((self.metric, *(term.metric for term in self.terms))))


@dataclass(frozen=True)
class Finding:
    claim: Claim
    mean: float
    half_width: float  # of the unadjusted 95% interval; NaN with fewer than 2 seeds
    seeds: int
    dropped: int  # seeds left out because a run of theirs diverged
    scale: float  # 100 for accuracies: reported in points
    p: float  # two-sided paired t test of a zero mean; NaN with fewer than 2 seeds
    adjusted_p: float  # Holm's over the family of claims judged together (`evaluate_all`); NaN outside it
    family: int  # how many claims were judged together: 1 for a claim judged alone, 0 where none could be

    def significant(self) -> bool:
        return bool(self.adjusted_p < FAMILY_ERROR)

    def interval_excludes_zero(self) -> bool:
        return bool(abs(self.mean) > self.half_width)

    def verdict(self) -> str:
        if self.seeds < 2:
            return "too few seeds for an interval"
        if self.significant():
            return "significant (Holm)"
        if self.interval_excludes_zero():
            return f"not significant after Holm's correction for {self.family} claims"
        return "not significant (Holm)"

    def line(self) -> str:
        unit = " points" if self.scale == 100 else ""
        value = f"{self.mean * self.scale:+.2f}{unit}"
        if self.seeds >= 2:
            low, high = (self.mean + s * self.half_width for s in (-1, 1))
            value += f", 95% CI [{low * self.scale:+.2f}, {high * self.scale:+.2f}]"
        dropped = f", {self.dropped} seed(s) left out: a run diverged" if self.dropped else ""
        adjusted = f", Holm-adjusted {p_text(self.adjusted_p)}" if self.family else ""
        # An interval that excludes 0 reads as a finding: say that the verdict does not follow it.
        corrected = self.interval_excludes_zero() and not self.significant()
        unadjusted = "; unadjusted interval excludes 0" if corrected else ""
        return (
            f"`{self.claim.text}`: {value} over {self.seeds} seeds{dropped}{adjusted}: **{self.verdict()}**"
            f"{unadjusted}{self.agreement()}"
        )

    def agreement(self) -> str:
        """What the runs say of the reference's sign, when the claim states one."""
        if not self.claim.expected:
            return ""
        if not self.significant():
            return "; the reference's sign is not shown here"
        agrees = (self.mean > 0) == (self.claim.expected > 0)
        return "; agrees with the reference" if agrees else "; **the opposite of the reference**"


def p_text(p: float) -> str:
    """The p-value as "p = 0.044" (two significant digits), or a bound below 0.0001, where more digits would claim a
    precision that a few seeds lack."""
    if p < 1e-4:
        return "p < 0.0001"
    return f"p = {p:.2f}" if p >= 0.1 else f"p = {p:.2g}"


def _pairs(text: str, claim: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in text.replace(",", " ").split():
        column, sep, value = item.partition("=")
        if not sep or not column or not value:
            raise ClaimError(claim, f"expected column=value, got {item!r}")
        pairs.append((column, value))
    return tuple(pairs)


def parse_claim(text: str) -> Claim:
    text = paper_note(text)[0]
    head, sep, contrast = text.partition(":")
    if not sep:
        raise ClaimError(text, "expected '<metric>[, column=value ...]: <term> - <term> ...[ < 0 | > 0]'")
    sign = EXPECTED_SIGN.search(contrast)
    expected = 0 if sign is None else (-1 if sign.group(1) == "<" else 1)
    contrast = contrast[: sign.start()] if sign else contrast
    metric, _, where = head.partition(",")
    metric, where = metric.strip(), _pairs(where, text)
    if METRIC in dict(where):
        raise ClaimError(text, f"the claim's metric comes first, before the first comma; {METRIC}= names a term's")
    parts = _TERM.split(" + " + contrast.strip())[1:]
    terms = tuple(_term(sign, _pairs(term, text), metric, text) for sign, term in zip(parts[::2], parts[1::2]))
    if len(terms) < 2:
        raise ClaimError(text, "a contrast needs at least two terms of column=value pairs")
    return Claim(text, metric, where, terms, expected)


def _term(sign: str, pairs: tuple[tuple[str, str], ...], metric: str, claim: str) -> Term:
    """A term's runs and its metric: the claim's unless one `metric=` pair names another."""
    named = [value for column, value in pairs if column == METRIC]
    if len(named) > 1:
        raise ClaimError(claim, f"a term names {METRIC}= {len(named)} times: {', '.join(named)}")
    if not pairs:
        raise ClaimError(claim, "a contrast needs at least two terms of column=value pairs")
    runs = tuple((column, value) for column, value in pairs if column != METRIC)
    return Term(1 if sign == "+" else -1, runs, named[0] if named else metric)


def _is_accuracy(metric: str) -> bool:
    """An accuracy's column names `acc` as a word: train_acc, test_acc_batch_stats, ..."""
    return "acc" in metric.split("_")


def _check_scale(claim: Claim) -> None:
    """A contrast adds its terms, so they share a scale: accuracies, reported in points, or none."""
    if len({_is_accuracy(m) for m in claim.metrics}) > 1:
        accuracies = ", ".join(m for m in claim.metrics if _is_accuracy(m))
        others = ", ".join(m for m in claim.metrics if not _is_accuracy(m))
        reason = f"mixes accuracies ({accuracies}), in points, with metrics of another scale ({others})"
        raise ClaimError(claim.text, f"{reason}; a claim's metrics are all accuracies or none is")


def paper_note(text: str) -> tuple[str, str]:
    """A claim's contrast and what the paper says, which may follow it after a `#` ("" if nothing does)."""
    claim, _, note = text.partition("#")
    return claim.strip(), note.strip()


def check_claim(text: str, metric_columns: tuple[str, ...], run_columns: tuple[str, ...]) -> None:
    """Reject a claim that names a metric or a column the results will not have, before anything trains."""
    claim = parse_claim(text)
    for metric in claim.metrics:
        if metric not in metric_columns:
            raise ClaimError(text, f"unknown metric {metric!r}; valid: {', '.join(metric_columns)}")
    _check_scale(claim)
    for column, _ in claim.where + tuple(p for term in claim.terms for p in term.pairs):
        if column not in (*run_columns, EPOCH):
            raise ClaimError(text, f"unknown column {column!r}; valid: {', '.join(run_columns)}, epoch")


def _select(columns: dict, pairs) -> np.ndarray:
    rows = np.ones(len(columns[EPOCH]), bool)
    for column, value in pairs:
        data = columns[column]
        if data.dtype.kind in "iuf":
            rows &= np.isclose(data.astype(float), float(value), rtol=1e-3, atol=0.0)
        else:
            rows &= data.astype(str) == value
    return rows


def evaluate(claim: Claim, columns: dict) -> Finding:
    """One claim judged alone, a family of one; a study's claims are judged together by `evaluate_all`."""
    _check_scale(claim)
    where = claim.where
    if EPOCH not in dict(where):
        where += ((EPOCH, str(int(columns[EPOCH].max()))),)
    shared = _select(columns, where)
    per_term = []
    for term in claim.terms:
        rows = shared & _select(columns, term.pairs)
        seeds = columns["seed"][rows]
        if len(np.unique(seeds)) != len(seeds):
            varying = [c for c in key_columns(columns) if c != "seed" and len(np.unique(columns[c][rows])) > 1]
            raise ClaimError(claim.text, f"a term selects several runs per seed; fix {', '.join(varying)}")
        per_term.append(dict(zip(seeds, zip(columns[term.metric][rows], columns["diverged"][rows]))))
    common = sorted(set.intersection(*(set(t) for t in per_term)))
    if not common:
        empty = [" ".join(f"{c}={v}" for c, v in term.pairs) for term, t in zip(claim.terms, per_term) if not t]
        reason = f"no run has {' or '.join(empty)}" if empty else "its terms share no seed"
        raise ClaimError(claim.text, reason)
    alive = [s for s in common if not any(t[s][1] for t in per_term)]
    contrast = np.array([sum(term.sign * float(t[s][0]) for term, t in zip(claim.terms, per_term)) for s in alive])
    mean, half = mean_ci(contrast) if len(contrast) else (float("nan"), float("nan"))
    scale = 100.0 if _is_accuracy(claim.metric) else 1.0
    p = t_test_p(contrast)
    return Finding(claim, mean, half, len(alive), len(common) - len(alive), scale, p, p, int(np.isfinite(p)))


def evaluate_all(texts: Iterable[str], columns: dict) -> list[Finding | ClaimError]:
    """A study's claims (`ReportConfig.claims`) judged as one family: each one's finding with its p-value
    Holm-adjusted over the findings that have one, or the ClaimError that says why these runs cannot decide it
    (a sweep narrowed with --set may lack its runs). Every reader of a study's claims takes its verdicts here."""
    results = []
    for text in texts:
        try:
            results.append(evaluate(parse_claim(text), columns))
        except ClaimError as e:
            results.append(e)
    tested = [i for i, r in enumerate(results) if isinstance(r, Finding) and np.isfinite(r.p)]
    for i, adjusted in zip(tested, holm([results[i].p for i in tested])):
        results[i] = replace(results[i], adjusted_p=float(adjusted), family=len(tested))
    return results


def t_test_p(contrast: np.ndarray) -> float:
    """The two-sided p-value of Student's one-sample t test of a zero mean, from the t statistic that `mean_ci`'s
    interval inverts: mean / (sd / sqrt(n)), n - 1 degrees of freedom. NaN for fewer than 2 values."""
    from scipy.special import stdtr  # the Student-t CDF, without scipy.stats' slow import

    n = len(contrast)
    if n < 2:
        return float("nan")
    mean, sem = contrast.mean(), contrast.std(ddof=1) / np.sqrt(n)
    if sem == 0:  # every seed agrees exactly: any difference at all is certain, none is no evidence of one
        return 1.0 if mean == 0 else 0.0
    return float(2 * stdtr(n - 1, -abs(mean / sem)))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes the running maximum of
    (m - j + 1) * p_(j) over j <= i, capped at 1. Rejecting where the adjusted p is below alpha is Holm's
    procedure, which holds the family-wise error rate at alpha whatever the tests' dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclass(frozen=True)
class Choice:
    group: tuple[tuple[str, object], ...]  # the other axes' values
    chosen: tuple[tuple[str, object], ...]  # the tuned axes' chosen values
    val_acc: float  # its final val_acc, mean over seeds
    tried: tuple[tuple[str, tuple], ...]  # each tuned axis's values tried in this group, ascending: its grid

    def edges(self) -> tuple[tuple[str, int], ...]:
        """(axis, -1) where the chosen value is the smallest tried, (axis, +1) where it is the largest: the optimum
        may lie outside the grid. A grid of one value is at both."""
        chosen = dict(self.chosen)
        return tuple(
            (axis, direction)
            for axis, values in self.tried
            for direction, end in ((-1, values[0]), (1, values[-1]))
            if chosen[axis] == end
        )

    @property
    def at_edge(self) -> bool:
        return bool(self.edges())


def tune(columns: dict, axes: tuple[str, ...]) -> tuple[dict, list[Choice]]:
    """The rows of the runs at the tuned axes' chosen values (every epoch), and the choices."""
    if not axes:
        return columns, []
    keys = key_columns(columns)
    missing = [a for a in axes if a not in keys]
    if missing:
        raise ConfigError(f"report.tune names {', '.join(missing)}, which are not run columns: {', '.join(keys)}")
    last = columns[EPOCH] == columns[EPOCH].max()
    val = np.where(columns["diverged"] == 1, 0.0, columns["val_acc"].astype(float))
    if np.isnan(val[last]).all():
        raise ConfigError("report.tune chooses on the validation set, but these runs have none: set data.n_val")
    others = [k for k in keys if k not in axes and k != "seed"]
    keep = np.zeros(len(last), bool)
    choices = []
    group_ids = _ids(columns, others)
    tuned_ids = _ids(columns, list(axes))
    for g in np.unique(group_ids[last]):
        in_group = last & (group_ids == g)
        scores = {t: np.nanmean(val[in_group & (tuned_ids == t)]) for t in np.unique(tuned_ids[in_group])}
        best = max(scores, key=scores.get)
        keep |= (group_ids == g) & (tuned_ids == best)
        row = np.flatnonzero(in_group & (tuned_ids == best))[0]
        tried = tuple((a, tuple(np.unique(columns[a][in_group]))) for a in axes)
        group, chosen = tuple((k, columns[k][row]) for k in others), tuple((a, columns[a][row]) for a in axes)
        choices.append(Choice(group, chosen, float(scores[best]), tried))
    return {k: v[keep] for k, v in columns.items()}, choices


def at_choices(columns: dict, choices: list[Choice]) -> dict:
    """The rows of another table of the same runs (`diagnostics.csv`) at the values `tune` chose: tables write
    their key columns alike, so the values compare exactly."""
    if not choices:
        return columns
    keep = np.zeros(len(columns[EPOCH]), bool)
    for choice in choices:
        keep |= np.all([columns[k] == v for k, v in choice.group + choice.chosen], axis=0)
    return {k: v[keep] for k, v in columns.items()}


def reported(layers: dict, columns: dict, choices: list[Choice]) -> dict:
    """The rows of another table of the same runs (`diagnostics.csv`) that the summary's means read: those at the
    values `tune` chose (`at_choices`), less the runs that diverged in `columns` (metrics.csv), which every mean
    leaves out."""
    layers = at_choices(layers, choices)
    keys = key_columns(columns)
    gone = columns["diverged"] != 0
    diverged = set(zip(*(columns[k][gone] for k in keys)))
    if not diverged:
        return layers
    keep = np.array([run not in diverged for run in zip(*(layers[k] for k in keys))], bool)
    return {k: v[keep] for k, v in layers.items()}


def _ids(columns: dict, names: list[str]) -> np.ndarray:
    """One integer per distinct combination of `names`' values, row by row."""
    if not names:
        return np.zeros(len(columns[EPOCH]), int)
    # Numbered in the order of the rows' values as text (and so is `tune`'s order of groups), column by column, each
    # column's distinct values ordered as text: a fraction of the time that sorting the rows of text took.
    ids = np.zeros(len(columns[names[0]]), np.int64)
    for name in names:
        ranks = _text_ranks(columns[name])
        ids = np.unique(ids * (ranks.max() + 1) + ranks, return_inverse=True)[1].reshape(-1)
    return ids


def _text_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank among the column's distinct values, ordered as their text."""
    distinct, inverse = np.unique(values, return_inverse=True)
    rank = np.empty(len(distinct), int)
    rank[np.argsort(distinct.astype(str), kind="stable")] = np.arange(len(distinct))
    return rank[inverse.reshape(-1)]
