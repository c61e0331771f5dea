"""Headline comparisons stated from the data: a claim is a contrast of runs paired by seed, reported with its
mean, its 95% interval over seeds and whether that interval excludes 0 (`ReportConfig.claims`).

    "test_acc, model=cnn: norm=batch batch_size=128 - norm=batch batch_size=2 - norm=group batch_size=128
     + norm=group batch_size=2"

is BN's drop from batch 128 to 2 minus GN's, per seed. A claim may end with `< 0` or `> 0`, the sign that the
study's reference (a paper) reports: the finding then says whether these runs agree, show no difference, or show
the opposite. What a paper says of it may follow a `#`; summary.md states it beside the finding. Runs pair by
seed: every term must select exactly one run
per seed once the claim's shared `column=value` pairs are applied (the last epoch unless one is given). A seed
with a diverged run in any term is left out of the contrast and counted.

`tune` picks value axes on the validation set (`ReportConfig.tune`) before any claim or table reads the runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from normbench.config import ConfigError
from normbench.core.axes import EPOCH, key_columns
from normbench.results.stats import mean_ci

_TERM = re.compile(r"\s*([+-])\s*")
# A claim's trailing "< 0" or "> 0": the sign its reference reports.
EXPECTED_SIGN = re.compile(r"\s*([<>])\s*0\s*$")


class ClaimError(ConfigError):
    """A claim that cannot be read or decided; `reason` says why without repeating the claim."""

    def __init__(self, claim: str, reason: str):
        super().__init__(f"claim {claim!r}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Claim:
    text: str
    metric: str
    where: tuple[tuple[str, str], ...]
    terms: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]  # (sign, column=value pairs)
    expected: int = 0  # the reference's sign of the contrast (`< 0`: -1, `> 0`: +1), 0 where the claim states none


@dataclass(frozen=True)
class Finding:
    claim: Claim
    mean: float
    half_width: float  # of the 95% interval; NaN with fewer than 2 seeds
    seeds: int
    dropped: int  # seeds left out because a run of theirs diverged
    scale: float  # 100 for accuracies: reported in points

    def verdict(self) -> str:
        if self.seeds < 2:
            return "too few seeds for an interval"
        low, high = self.mean - self.half_width, self.mean + self.half_width
        return "significant" if low > 0 or high < 0 else "not significant"

    def line(self) -> str:
        unit = " points" if self.scale == 100 else ""
        value = f"{self.mean * self.scale:+.2f}{unit}"
        if self.seeds >= 2:
            low, high = (self.mean + s * self.half_width for s in (-1, 1))
            value += f", 95% CI [{low * self.scale:+.2f}, {high * self.scale:+.2f}]"
        dropped = f", {self.dropped} seed(s) left out: a run diverged" if self.dropped else ""
        return f"`{self.claim.text}`: {value} over {self.seeds} seeds{dropped}: **{self.verdict()}**{self.agreement()}"

    def agreement(self) -> str:
        """What the runs say of the reference's sign, when the claim states one."""
        if not self.claim.expected:
            return ""
        if self.verdict() != "significant":
            return "; the reference's sign is not shown here"
        agrees = (self.mean > 0) == (self.claim.expected > 0)
        return "; agrees with the reference" if agrees else "; **the opposite of the reference**"


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
    parts = _TERM.split(" + " + contrast.strip())[1:]
    terms = tuple((1 if sign == "+" else -1, _pairs(term, text)) for sign, term in zip(parts[::2], parts[1::2]))
    if len(terms) < 2 or any(not pairs for _, pairs in terms):
        raise ClaimError(text, "a contrast needs at least two terms of column=value pairs")
    return Claim(text, metric.strip(), _pairs(where, text), terms, expected)


def paper_note(text: str) -> tuple[str, str]:
    """A claim's contrast and what the paper says, which may follow it after a `#` ("" if nothing does)."""
    claim, _, note = text.partition("#")
    return claim.strip(), note.strip()


def check_claim(text: str, metric_columns: tuple[str, ...], run_columns: tuple[str, ...]) -> None:
    """Reject a claim that names a metric or a column the results will not have, before anything trains."""
    claim = parse_claim(text)
    if claim.metric not in metric_columns:
        raise ClaimError(text, f"unknown metric {claim.metric!r}; valid: {', '.join(metric_columns)}")
    for column, _ in claim.where + tuple(p for _, pairs in claim.terms for p in pairs):
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
    where = claim.where
    if EPOCH not in dict(where):
        where += ((EPOCH, str(int(columns[EPOCH].max()))),)
    shared = _select(columns, where)
    per_term = []
    for sign, pairs in claim.terms:
        rows = shared & _select(columns, pairs)
        seeds = columns["seed"][rows]
        if len(np.unique(seeds)) != len(seeds):
            varying = [c for c in key_columns(columns) if c != "seed" and len(np.unique(columns[c][rows])) > 1]
            raise ClaimError(claim.text, f"a term selects several runs per seed; fix {', '.join(varying)}")
        per_term.append((sign, dict(zip(seeds, zip(columns[claim.metric][rows], columns["diverged"][rows])))))
    common = sorted(set.intersection(*(set(t) for _, t in per_term)))
    if not common:
        empty = [" ".join(f"{c}={v}" for c, v in pairs) for (_, pairs), (_, t) in zip(claim.terms, per_term) if not t]
        reason = f"no run has {' or '.join(empty)}" if empty else "its terms share no seed"
        raise ClaimError(claim.text, reason)
    alive = [s for s in common if not any(t[s][1] for _, t in per_term)]
    contrast = np.array([sum(sign * float(t[s][0]) for sign, t in per_term) for s in alive])
    mean, half = mean_ci(contrast) if len(contrast) else (float("nan"), float("nan"))
    scale = 100.0 if claim.metric.endswith("_acc") else 1.0
    return Finding(claim, mean, half, len(alive), len(common) - len(alive), scale)


@dataclass(frozen=True)
class Choice:
    group: tuple[tuple[str, object], ...]  # the other axes' values
    chosen: tuple[tuple[str, object], ...]  # the tuned axes' chosen values
    val_acc: float  # its final val_acc, mean over seeds
    at_edge: bool  # the chosen value is the smallest or largest tried: the optimum may lie outside the grid


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
        tried = [columns[a][in_group] for a in axes]
        at_edge = any(
            len(np.unique(values)) > 1 and columns[a][row] in (values.min(), values.max())
            for a, values in zip(axes, tried)
        )
        group, chosen = tuple((k, columns[k][row]) for k in others), tuple((a, columns[a][row]) for a in axes)
        choices.append(Choice(group, chosen, float(scores[best]), bool(at_edge)))
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


def _ids(columns: dict, names: list[str]) -> np.ndarray:
    """One integer per distinct combination of `names`' values, row by row."""
    if not names:
        return np.zeros(len(columns[EPOCH]), int)
    table = np.stack([columns[n].astype(str) for n in names], axis=1)
    return np.unique(table, axis=0, return_inverse=True)[1].reshape(-1)
