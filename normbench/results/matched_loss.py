"""The loss-landscape probes (`normbench.core.landscape`) of a norm against the plain network's at matched
training loss, not at the same epoch.

A network that trains faster sits lower on the loss at every epoch, and lower on the loss its gradient and the
gradient's changes are smaller: a contrast at one epoch mixes the norm's effect with the loss level. Here each
epoch of a norm's run is paired with the epoch of the plain network's run (norm `none`, the same seed and other
axes) whose training loss is closest on a log scale, and the pair is kept where the two losses are within a factor
`LOSS_MATCH`; an epoch may pair with one the plain network's run has paired already. Per seed, the contrast is
the mean over its pairs of log(probe) - log(the plain network's probe); then the mean over seeds and its Student-t
95% interval, as a log ratio and as a ratio (its exp), and the p-value of the two-sided paired t test of a zero
log ratio. The log: the probes scale with the loss (on the landscape study, about as its power 1 for the loss's
range and 0.8 for the gradient's change), so a difference of logs weighs a pair at a low loss as much as one at a
high loss.

The training loss of an epoch (`train_loss`) is the mean over its steps, and the probe is taken at its first
step, before them: the epoch's loss understates the loss at the probe, and the more so the faster a network
trains. The faster network's probe is then paired with one of the plain network's taken at a lower loss than its
own, which shrinks the plain network's probe: the error works against finding the faster network's probe smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normbench.core.axes import EPOCH, key_columns
from normbench.results.claims import t_test_p
from normbench.results.stats import mean_ci

# The probes that Santurkar et al.'s Figure 4 draws: the loss's variation along the step, the gradient's largest
# change, the effective beta-smoothness.
PROBES = ("landscape_loss_range", "landscape_grad_change_max", "landscape_beta")
LOSS = "train_loss"
REFERENCE = "none"
# Two epochs' training losses match when they are within this factor: a mismatch that large moves a pair's log
# ratio by log 1.25 = 0.22 times the probe's slope against the log loss (on the landscape study about 1 for the
# loss's range, 0.8 for the gradient's change, 0.2 for beta), and the mismatches of a seed's pairs fall on both
# sides. A tighter factor leaves few pairs where the two runs' losses part: 1.1 kept 9-15 of 20 epochs per seed
# there, 1.25 kept 12-20, and 1.1, 1.25 and 1.5 gave means within each other's intervals.
LOSS_MATCH = 1.25


@dataclass(frozen=True)
class MatchedContrast:
    setting: tuple[tuple[str, object], ...]  # the other run axes' values, those that vary in the table
    norm: str
    metric: str
    log_ratio: float  # mean over seeds of the per-seed mean of log(probe) - log(the plain network's probe)
    half_width: float  # of its 95% interval; NaN with fewer than 2 seeds
    p: float  # two-sided paired t test of a zero mean log ratio over the seeds; NaN with fewer than 2
    pairs: tuple[int, ...]  # matched epochs of each seed in the contrast
    lag: float  # median over the pairs of the plain network's epoch minus the norm's
    dropped: int  # seeds left out: a run of theirs diverged, or no epoch matched

    def ratio(self) -> tuple[float, float, float]:
        """exp of the mean log ratio and of its interval's ends: the norm's probe over the plain network's."""
        mean = float(np.exp(self.log_ratio))
        return mean, *(float(np.exp(self.log_ratio + s * self.half_width)) for s in (-1, 1))


def closest_loss_pairs(loss: np.ndarray, reference_loss: np.ndarray, within: float = LOSS_MATCH):
    """Indices (i, j): each epoch i of `loss` with the epoch j of `reference_loss` closest to it on a log scale,
    where the two are within a factor `within`."""
    gap = np.abs(np.log(loss)[:, None] - np.log(reference_loss)[None, :])
    closest = gap.argmin(1)
    kept = gap[np.arange(len(loss)), closest] <= np.log(within)
    return np.flatnonzero(kept), closest[kept]


def _by_epoch(columns: dict, rows: np.ndarray, field: str) -> np.ndarray:
    order = np.argsort(columns[EPOCH][rows], kind="stable")
    return columns[field][rows][order].astype(float)


def _settings(columns: dict) -> tuple[list[str], list[tuple]]:
    """The run axes other than norm and seed that vary in the table, and their combinations."""
    keys = [k for k in key_columns(columns) if k not in ("norm", "seed") and len(np.unique(columns[k])) > 1]
    return keys, sorted(set(zip(*(columns[k] for k in keys)))) or [()]


def matched_contrasts(columns: dict, within: float = LOSS_MATCH) -> list[MatchedContrast]:
    """For every norm but the plain network, every combination of the other varying axes and every probe of
    `PROBES`: its contrast with the plain network at matched training loss; none where the table holds no plain
    network or no probes (metrics.csv has their columns only with train.landscape_steps)."""
    norms = list(dict.fromkeys(columns["norm"]))
    if REFERENCE not in norms or PROBES[0] not in columns or np.isnan(columns[PROBES[0]].astype(float)).all():
        return []
    keys, settings = _settings(columns)
    found = []
    for setting in settings:
        here = np.all([columns[k] == v for k, v in zip(keys, setting)], axis=0)
        for norm in (n for n in norms if n != REFERENCE):
            for metric in PROBES:
                found.append(_contrast(columns, here, norm, metric, within, tuple(zip(keys, setting))))
    return found


def _contrast(columns, here, norm, metric, within, setting) -> MatchedContrast:
    per_seed, pairs, lags, dropped = [], [], [], 0
    for seed in np.unique(columns["seed"][here]):
        runs = [here & (columns["seed"] == seed) & (columns["norm"] == n) for n in (norm, REFERENCE)]
        if not all(r.any() for r in runs) or any(columns["diverged"][r].any() for r in runs):
            dropped += 1
            continue
        (loss, probe, epochs), (ref_loss, ref_probe, ref_epochs) = (
            tuple(_by_epoch(columns, r, f) for f in (LOSS, metric, EPOCH)) for r in runs
        )
        i, j = closest_loss_pairs(loss, ref_loss, within)
        if not len(i):
            dropped += 1
            continue
        per_seed.append(np.mean(np.log(probe[i]) - np.log(ref_probe[j])))
        pairs.append(len(i))
        lags.extend(ref_epochs[j] - epochs[i])
    mean, half = mean_ci(per_seed) if per_seed else (float("nan"), float("nan"))
    lag = float(np.median(lags)) if lags else float("nan")
    p = t_test_p(np.asarray(per_seed))
    return MatchedContrast(setting, norm, metric, mean, half, p, tuple(pairs), lag, dropped)
