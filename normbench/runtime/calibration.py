"""This machine's training rate, as its last `normbench run`s achieved it, so that `show` and `run` turn a sweep's
FLOPs into seconds. Each run records the matmul FLOPs of the cells it trained (`normbench.core.budget` counts
them), their steps and the seconds they trained, per device kind, in `calibration.json` under the cache directory.

A sweep's training time is modeled as `flops / rate + steps * step_s`: the FLOPs at a rate, plus a cost for each
step of a cell's program (a step of every run in the cell at once) whatever its size, which is what keeps
small-batch cells far below the rate. With runs of one config only, or runs whose fit is degenerate, the model
is the last run's rate alone.

Like every cache entry it only informs: a missing, unreadable or corrupt file means "not calibrated", never an
error, and a file that cannot be written leaves the next estimate as it was.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

from normbench.runtime.cache import cache_dir, keep

FILE = "calibration.json"
KEPT = 8  # runs kept per device kind, each config's latest
# Training shorter than this measures fixed costs (each cell's first dispatch, the host callbacks of every epoch,
# the transfers of its results) more than a rate: a tiny study's few steps, kept, put the rate at a tenth of a
# study's or less and made every later estimate hours too long.
MIN_SECONDS = 5.0
# On a CPU, a run whose process had less than this share of a core while it trained (its CPU time over its wall
# time) mostly waited for other jobs: a tiny run starved at nice 19 lasted long enough to pass MIN_SECONDS and put
# the rate far below the machine's. On a GPU the host mostly waits by design, so the share says nothing there.
MIN_CPU_SHARE = 0.5


@dataclass(frozen=True)
class Sample:
    """One run's training: what it computed and how long it took, every worker together."""

    config: str
    flops: float
    steps: int  # steps of the cells' programs, summed over the cells
    seconds: float
    measured: str  # when, local time

    def valid(self) -> bool:
        """Whether it measures a rate: numbers, all positive, of a run long enough to time (`MIN_SECONDS`)."""
        numbers = (self.flops, self.steps, self.seconds)
        if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in numbers):
            return False
        return self.seconds >= MIN_SECONDS


@dataclass(frozen=True)
class Rate:
    flops_per_s: float
    step_s: float  # seconds per step of a cell's program beyond its FLOPs; 0 when not fitted
    runs: int  # how many runs it is fitted to

    def seconds(self, flops: float, steps: int) -> float:
        return flops / self.flops_per_s + steps * self.step_s

    def text(self) -> str:
        if not self.step_s:
            return f"this machine's last rate ({self.flops_per_s / 1e9:.3g} GFLOP/s)"
        return (
            f"this machine's {self.flops_per_s / 1e9:.3g} GFLOP/s + {self.step_s * 1e3:.2g} ms a step "
            f"(fitted to its last {self.runs} runs)"
        )


def device_kind() -> str:
    """The key of a rate: the backend and the kind of its first device ("cpu: cpu", "gpu: NVIDIA H200")."""
    import jax

    return f"{jax.default_backend()}: {jax.devices()[0].device_kind}"


def last_rate(kind: str) -> Rate | None:
    """`kind`'s rate fitted to its recorded runs, or None if there are none (or the file cannot be read)."""
    samples = _samples(_read().get(kind))
    return fit(samples) if samples else None


def fit(samples: list[Sample]) -> Rate:
    """Least squares of `seconds = flops / rate + steps * step_s` over `samples` (the last one first); the last
    sample's rate alone when the fit is not positive in both terms (one sample, or samples of one shape)."""
    last = samples[-1]
    alone = Rate(last.flops / last.seconds, 0.0, 1)
    if len(samples) < 2:
        return alone
    # The normal equations of a and c in seconds = a * flops + c * steps, each run weighted by 1 / seconds so
    # that a long run does not outweigh the rest (a relative error).
    sff = sum((s.flops / s.seconds) ** 2 for s in samples)
    snn = sum((s.steps / s.seconds) ** 2 for s in samples)
    sfn = sum(s.flops * s.steps / s.seconds**2 for s in samples)
    sf = sum(s.flops / s.seconds for s in samples)
    sn = sum(s.steps / s.seconds for s in samples)
    det = sff * snn - sfn**2
    if det <= 1e-12 * sff * snn:
        return alone
    a, c = (sf * snn - sn * sfn) / det, (sn * sff - sf * sfn) / det
    return Rate(1 / a, c, len(samples)) if a > 0 and c > 0 else alone


def record(kind: str, config: str, flops: float, steps: int, seconds: float, cpu_share: float = 1.0) -> None:
    """Keep one run's training as `kind`'s latest sample (atomically; other kinds', other configs' kept). A run
    with nothing to measure (every cell resumed), too short to time (`MIN_SECONDS`) or, on a CPU, starved by other
    jobs (`cpu_share`, its CPU time over its wall time, below `MIN_CPU_SHARE`) records nothing."""
    sample = Sample(config, flops, steps, seconds, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if not sample.valid() or (kind.startswith("cpu") and cpu_share < MIN_CPU_SHARE):
        return
    rates = _read()
    kept = [s for s in _samples(rates.get(kind)) if s.config != config][-(KEPT - 1) :]
    rates[kind] = [asdict(s) for s in (*kept, sample)]
    keep(cache_dir() / FILE, (json.dumps(rates, indent=1) + "\n").encode())


def _read() -> dict:
    try:
        rates = json.loads((cache_dir() / FILE).read_text())
    except (OSError, ValueError):  # missing, unreadable, not JSON (UnicodeDecodeError is a ValueError)
        return {}
    return rates if isinstance(rates, dict) else {}


def _samples(entries) -> list[Sample]:
    """The valid samples of one kind's entry, oldest first; anything else in it is ignored."""
    samples = []
    for entry in entries if isinstance(entries, list) else ():
        try:
            sample = Sample(**entry)
        except TypeError:  # not a dict, or not these fields
            continue
        if sample.valid():
            samples.append(sample)
    return samples
