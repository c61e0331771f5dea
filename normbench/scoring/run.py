"""`normbench scorecard`: every norm asked for (BatchNorm and LayerNorm always among them) through the battery
(`normbench.scoring.battery`), then the scorecard of every norm its directory holds.

    OUT/battery.json            what battery these results are of: another battery's are refused
    OUT/runs/<norm>/<test>/     the norm's results of one test: a study's results directory, trained by run_study
    OUT/runs/<norm>/cost.csv    its cost test's timings
    OUT/runs/<norm>/norm.json   written last: the norm's battery is complete (and what the scorecard needs of it)
    OUT/<test>/                 one results directory per test over every complete norm, for plot, report, compare
    OUT/scorecard.md, .csv, .png

A norm is a static axis, so a norm more is more cells, and a study's results directory refuses another config:
hence one directory per norm and test, each resumed by the engine as any study is (`run_study`). A rerun with
one more norm finds every other norm's directories finished and trains only the new one's; an interrupted one
goes on from its last kept cell.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from normbench.config import Config, ConfigError, from_dict, to_dict
from normbench.core.budget import Estimate, estimate
from normbench.core.sweep import resolve_workers
from normbench.data import load
from normbench.errors import UserError
from normbench.norms import NORMS, check_norm
from normbench.reports.progress import Progress, logger
from normbench.results.store import atomic_write, exclusive, prepare_output_dir
from normbench.results.tuning import worst_extensions
from normbench.runtime.calibration import device_kind, last_rate
from normbench.scoring.battery import (
    COST_MODELS,
    COST_ROUNDS,
    NOT_APPLICABLE,
    QUICK_COST_ROUNDS,
    REFERENCES,
    TESTS,
    cost_config,
    for_norms,
    identity,
)
from normbench.scoring.cost import CostTest
from normbench.scoring.layout import BATTERY, COST, NORM, RUNS
from normbench.scoring.report import write_scorecard
from normbench.scoring.scores import MEASURES
from normbench.study import is_finished, run_study
from normbench.validate import validate


class BatteryError(UserError):
    """A scorecard that cannot run as asked: its norms, or its output directory."""


@dataclass(frozen=True)
class Plan:
    """What a scorecard run trains: each norm's config of each test it takes part in."""

    norms: tuple[str, ...]
    out: Path
    quick: bool
    configs: dict[tuple[str, str], Config]  # (norm, test) -> its config; a test a norm skips is absent

    @property
    def rounds(self) -> int:
        return QUICK_COST_ROUNDS if self.quick else COST_ROUNDS

    def directory(self, norm: str, test: str | None = None) -> Path:
        return self.out / RUNS / norm / (test or "")

    def todo(self, norm: str) -> list[str]:
        """The tests whose results `norm` still lacks (`cost` for its timings)."""
        tests = [t for n, t in self.configs if n == norm and not is_finished(self.directory(n, t), self.configs[n, t])]
        return tests + ([] if (self.directory(norm) / COST).is_file() else ["cost"])


def plan(norms: Sequence[str] | None, out: Path, quick: bool = False) -> Plan:
    """Resolve and check everything before anything is written: each norm known (default: every registered one)
    and able to run each test with the battery's options, and `out` empty or this battery's."""
    names = tuple(dict.fromkeys([*REFERENCES, *(NORMS if norms is None else norms)]))
    for name in names:
        check_norm(name, None, ())
        if Path(name).name != name or name.startswith("."):
            raise BatteryError(f"norm {name!r} cannot name a directory of the scorecard; register it under another")
    configs = {}
    for name in names:
        for test in TESTS:
            if test.trains(name):
                configs[name, test.name] = _checked(for_norms(test.config(quick), (name,)), name, test.name)
        for model in COST_MODELS:
            if not model.skips(name):
                _checked(for_norms(cost_config(model, quick), (name,)), name, "cost")
    check_out(Path(out), identity(quick))
    return Plan(names, Path(out), quick, configs)


def _checked(config: Config, norm: str, test: str) -> Config:
    try:
        validate(config)
    except ConfigError as e:
        raise ConfigError(f"norm {norm!r} cannot run the scorecard's {test} test: {e}") from None
    return config


def check_out(out: Path, battery: dict) -> None:
    """Refuse an `out` that holds anything but this battery's results (`battery.json` says whose they are)."""
    recorded = out / BATTERY
    if recorded.is_file():
        try:
            theirs = _read_back(json.loads(recorded.read_text()))
        except (ValueError, ConfigError, AttributeError, KeyError, TypeError):
            raise BatteryError(f"{str(recorded)!r} is damaged; choose another --out") from None
        differing = _differences(theirs, json.loads(json.dumps(battery)))
        if differing:
            shown = ", ".join(differing[:4]) + (f" and {len(differing) - 4} more" if len(differing) > 4 else "")
            raise BatteryError(f"{str(out)!r} holds another battery's results (differs in {shown}); choose "
                               "another --out")  # fmt: skip
    elif out.exists() and not out.is_dir():
        raise BatteryError(f"{str(out)!r} is not a directory; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise BatteryError(f"{str(out)!r} exists and holds no scorecard ({BATTERY} is missing); choose another --out")


def _read_back(battery: dict) -> dict:
    """A recorded battery with each config read back as a results directory's config.json is (`from_dict`): a
    field added since it was recorded takes its default, which computes what the runs before it computed, so a
    scorecard outlives a new config field as its runs' directories do."""

    def configs(group: dict) -> dict:
        return {name: json.loads(json.dumps(to_dict(from_dict(Config, config)))) for name, config in group.items()}

    return {**battery, "tests": configs(battery["tests"]), "cost": configs(battery["cost"])}


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def estimate_text(plan: Plan, workers: int | None = None) -> str:
    """What the run will train, test by test and norm by norm, and its time at this machine's rate (as `normbench
    show` estimates a study), compiling not counted: the FLOPs counted are the matrix products', the same for every
    norm, so each test is traced once, with BatchNorm; a norm's own elementwise cost is what the cost test measures.
    Tuning extensions are counted apart, at worst (every choice at an edge, every step taken)."""
    workers = resolve_workers(workers)
    rate = last_rate(device_kind())
    per_test = {}
    for test in TESTS:
        config = for_norms(test.config(plan.quick), ("batch",))
        cost = estimate(config, load(config.data), workers, rate)
        extends = config.report.tune and config.report.tune_extensions
        per_test[test.name] = (cost, worst_extensions(config, cost) if extends else None)
    timing = [estimate(c, load(c.data), 1, rate) for c in (for_norms(cost_config(m, plan.quick), ("batch",))
                                                           for m in COST_MODELS)]  # fmt: skip
    # Each round times an epoch of the norm's program and of no norm's, after one epoch of each to warm up; a cost
    # config's estimate is of its 2 epochs.
    per_test["cost"] = (_sum(timing, plan.rounds + 1), None)
    tests = ", ".join(f"{name} {_time([cost])}" + (f" (+{_time([extra])})" if extra else "")
                      for name, (cost, extra) in per_test.items())  # fmt: skip
    lines, total, worst, cells = [f"#   each norm's tests (at worst + tuning extensions): {tests}"], [], [], 0
    by_todo: dict[tuple[str, ...], list[str]] = {}
    for norm in plan.norms:
        by_todo.setdefault(tuple(plan.todo(norm)), []).append(norm)
    for todo, norms in by_todo.items():
        if not todo:
            lines.append(f"#   {', '.join(norms)}: finished, nothing to train")
            continue
        mine = [per_test[test][0] for test in todo]
        extra = [per_test[test][1] for test in todo if per_test[test][1] is not None]
        total += mine * len(norms)
        worst += extra * len(norms)
        cells += len(norms) * sum(len(per_test[test][0].cell_steps) for test in todo if test != "cost")
        lines.append(f"#   {', '.join(norms)}: {', '.join(todo)}: each {_time(mine)}"
                     + (f" (+{_time(extra)})" if extra else ""))  # fmt: skip
    if not total:
        return "\n".join(["# scorecard: every norm is finished; nothing to train", *lines])
    at = f" at {rate.text()}" if rate else "; run once to calibrate"
    head = (f"# scorecard: {len(plan.norms)} norms, training {_time(total)}{at}; tuning extensions at worst "
            f"+{_time(worst)}; compiling {cells} cells and the cost test's programs not counted")  # fmt: skip
    return "\n".join([head, *lines])


def _sum(costs: list[Estimate], times: float = 1) -> Estimate:
    """One estimate of the work of `costs` together (`times` over), for its time."""
    flops, steps = (round(times * sum(getattr(c, name) for c in costs)) for name in ("flops", "steps"))
    return Estimate((), 0, 1, 0, (flops,), (steps,), costs[0].rate)


def _time(costs: list[Estimate]) -> str:
    """The training time of `costs` together, in minutes: a battery's parts add up in one unit. Uncalibrated, the
    estimate's own range of assumed rates."""
    total = _sum(costs) if costs else None
    if total is None or total.rate is None:
        return total.training_text() if total else "0 min"  # the cells to compile are counted once, in the head
    return f"{total.rate.seconds(total.flops, total.steps) / 60:.1f} min"


def run_scorecard(
    norms: Sequence[str] | None = None,
    out: str | Path = Path("runs") / "scorecard",
    quick: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Path:
    """Train what `plan` finds missing, norm by norm (references first), then write the per-test results
    directories and the scorecard over every complete norm in `out`. Returns `out`."""
    todo = plan(norms, Path(out), quick)
    logger.info(estimate_text(todo, workers))
    prepare_output_dir(todo.out)
    with exclusive(todo.out):
        if not (todo.out / BATTERY).is_file():
            atomic_write(todo.out / BATTERY, json.dumps(identity(quick), indent=1) + "\n")
        timing = CostTest(quick, todo.rounds)
        for norm in todo.norms:
            for test in todo.todo(norm):
                logger.info(f"scorecard: {norm}, test {test}")
                if test == "cost":
                    todo.directory(norm).mkdir(parents=True, exist_ok=True)
                    atomic_write(todo.directory(norm) / COST, timing.run(norm))
                else:
                    run_study(todo.configs[norm, test], todo.directory(norm, test), progress, workers=workers)
            if not (todo.directory(norm) / NORM).is_file():
                skipped = {m.name: reason for m in MEASURES if (reason := m.skips(norm)).startswith(NOT_APPLICABLE)}
                facts = {"name": norm, "batch_dependent": NORMS[norm].batch_dependent, "summary": NORMS[norm].summary,
                         "not_applicable": skipped}  # fmt: skip
                atomic_write(todo.directory(norm) / NORM, json.dumps(facts, indent=1) + "\n")
        write_scorecard(todo.out, quick)
    return todo.out
