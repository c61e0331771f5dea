"""Tuning that cannot hide at a grid's edge (`ReportConfig.tune_extensions`).

`tune` (`normbench.results.claims`) chooses each tuned axis's value per configuration on the validation set. A
choice that is the first or last value of its grid says only that the optimum may lie beyond it, so a study's run
extends the grid there: it trains the next value that way and chooses again, round after round, until no choice
sits at an edge with steps left, at most `report.tune_extensions` steps each way. Learning rates step by a factor
of 2 (x2 above the largest, /2 below the smallest); another value axis by the ratio of its two outermost values on
that side, as a geometric grid would continue.

An `Extension` is one more value of one tuned axis for one of the study's cells: that cell of the config whose
grid of the axis is the new value alone, a program of its own, trained and kept (`unfinished/`) like any cell,
numbered after the study's own cells. Only the configurations at that edge train it (the points of the cell's
other value axes whose choice sat there: `Cell.only`), and only the new value: the runs already trained are not
repeated, and a configuration whose choice lies inside its grid gains nothing. Its rows follow the study's in
metrics.csv, so the table keeps every run tried; config.json records each cell's values searched by any of its
configurations (`searched_grids`) and summary.md each configuration's own.

Which cells extend is decided from the kept rows alone, which an interrupted and resumed run reproduces byte for
byte: the rerun takes the same decisions, numbers the extensions alike and trains only those not kept.

An extension's run is not bit for bit the run it would have been inside its cell's original grid: XLA reduces
over a vmapped grid of another size in another order, so losses may differ in the last place. Tuning reads it as
any other run.

Cost, at worst (`extension_text`): each round trains a cell at most one value each way per tuned axis, a program
of at most 1/n of the cell's runs (n: the axis's values in the config), compiled once; the rounds end within
`tune_extensions` steps each way, so a cell trains at most 2 x tune_extensions / n more of its runs, in at most
2 x tune_extensions more programs per tuned axis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from normbench.config import Config, ConfigError
from normbench.core.axes import VALUE, kind, run_columns
from normbench.core.grid import Cell, cells, plan
from normbench.results.claims import Choice, tune
from normbench.results.store import parse_metrics
from normbench.results.table import join_tables

if TYPE_CHECKING:
    from normbench.core.budget import Estimate

# Learning rates are searched on a log scale, and a factor of 2 between neighbours is the usual spacing.
LR_FACTOR = 2.0
DIRECTIONS = (-1, 1)  # below the grid's smallest value, above its largest
SIDE = {-1: "below", 1: "above"}


def grid(config: Config, axis: str) -> tuple:
    """The values the config gives a tuned axis, in its field's units (learning rates before batch scaling)."""
    if axis == "learning_rate":
        return config.sweep.learning_rates
    if axis == "init_scale":
        return config.sweep.init_scales
    return config.sweep.fields[axis]


def with_grid(config: Config, axis: str, values: tuple) -> Config:
    sweep = config.sweep
    if axis == "learning_rate":
        sweep = dataclasses.replace(sweep, learning_rates=values)
    elif axis == "init_scale":
        sweep = dataclasses.replace(sweep, init_scales=values)
    else:
        sweep = dataclasses.replace(sweep, fields={**sweep.fields, axis: values})
    return dataclasses.replace(config, sweep=sweep)


def step_value(config: Config, axis: str, direction: int, step: int) -> float:
    """The value `step` steps beyond `axis`'s grid, below it (`direction` -1) or above (+1)."""
    values = sorted(grid(config, axis))
    outer = values[-1] if direction > 0 else values[0]
    if axis == "learning_rate":
        return outer * LR_FACTOR ** (direction * step)
    ratio = outer / (values[-2] if direction > 0 else values[1])
    return float(f"{outer * ratio**step:.12g}")  # 0.1, not the 0.10000000000000002 of 0.01 x (0.01 / 0.001)


def _unsteppable(config: Config, axis: str) -> str | None:
    """Why `axis`'s grid has no next value on some side, or None."""
    if axis not in ("learning_rate", "init_scale") and not (axis in config.sweep.fields and kind(axis) == VALUE):
        return ("only a value axis with a grid of its own (learning_rate, init_scale, a swept field that "
                "`normbench show` calls value) gains runs in the cells there are")  # fmt: skip
    if axis == "learning_rate":
        return None
    values = sorted(grid(config, axis))
    if len(values) < 2:
        return f"its grid ({values[0]:g}) has one value, so no ratio to step by"
    for end, outer, inner in (("smallest", values[0], values[1]), ("largest", values[-1], values[-2])):
        if not inner or outer / inner <= 0:
            return f"{outer:g} and {inner:g}, its {end} values, have no ratio to step by"
    return None


def check_extensions(config: Config, check) -> None:
    """Refuse a `report.tune_extensions` that cannot step a tuned axis, or whose values `check` (a config's range
    checks) rejects, before anything trains."""
    limit = config.report.tune_extensions
    if limit < 0:
        raise ConfigError(f"report.tune_extensions must be at least 0, got {limit}")
    if not limit:
        return
    for axis in config.report.tune:
        reason = _unsteppable(config, axis)
        if reason:
            raise ConfigError(f"report.tune_extensions={limit} cannot extend {axis}: {reason}; set "
                              "report.tune_extensions=0 to tune it within its grid")  # fmt: skip
        for direction in DIRECTIONS:
            for step in range(1, limit + 1):
                value = step_value(config, axis, direction, step)
                try:
                    check(with_grid(config, axis, (value,)))
                except ConfigError as e:
                    raise ConfigError(
                        f"report.tune_extensions={limit} would extend {axis} to {value:g}, {step} step(s) "
                        f"{SIDE[direction]} its grid, where {e}; lower it"
                    ) from None


@dataclass(frozen=True)
class Extension:
    """One more value of a tuned axis for one of the study's cells, `step` steps beyond the config's grid."""

    cell: int  # the cell's index in `cells(config)`
    axis: str
    direction: int  # -1: below the grid, +1: above
    step: int  # 1 for the value next to the grid, up to report.tune_extensions
    points: tuple[tuple[tuple[str, object], ...], ...]  # the cell's configurations at that edge (`configurations`)

    def value(self, config: Config) -> float:
        return step_value(config, self.axis, self.direction, self.step)

    def config(self, config: Config) -> Config:
        """The config whose cell trains this value alone."""
        return with_grid(config, self.axis, (self.value(config),))

    def restrict(self, cell: Cell) -> Cell:
        """The study's cell as this extension trains it: its configurations at the edge alone."""
        return dataclasses.replace(cell, only=self.points)


def configurations(config: Config, cell: Cell) -> list[tuple[tuple[str, object], ...]]:
    """The cell's points of its untuned value axes, in row order, each as (column, value) pairs: what a tuning
    choice fixes within the cell besides the seed."""
    values = plan(config, cell).run_values
    names = [column for column in values if column not in config.report.tune]
    points = (tuple((c, values[c][i]) for c in names) for i in range(len(values[names[0]])))
    return list(dict.fromkeys(points))


def _matches(point: tuple[tuple[str, object], ...], group: dict) -> bool:
    # A table's numbers read back as NumPy scalars, the config's are Python's: compared as numbers.
    return all(float(group[column]) == float(value) for column, value in point)


def cell_tables(finished: dict[int, str], n_cells: int, extensions: list[Extension]) -> list[dict]:
    """Each of the study's cells' rows, its extensions' after its own, from the kept tables by index (the study's
    cells first, then the extensions in order)."""
    mine = [[finished[i]] for i in range(n_cells)]
    for j, extension in enumerate(extensions):
        mine[extension.cell].append(finished[n_cells + j])
    return [parse_metrics(join_tables(tables)) for tables in mine]


def edges(config: Config, tables: list[dict]) -> np.ndarray:
    """[cell, tuned axis, direction (below, above), configuration]: where a configuration of the cell (by its
    index in `configurations`) chose that end of the axis's grid as it stands. `tables`: each cell's rows
    (`cell_tables`). An array, so that every process of a multi-process run can receive it."""
    axes, study_cells = config.report.tune, cells(config)
    points = [configurations(config, cell) for cell in study_cells]
    found = np.zeros((len(tables), len(axes), len(DIRECTIONS), max(map(len, points))), bool)
    for i, columns in enumerate(tables):
        for choice in tune(columns, axes)[1]:
            group = dict(choice.group)
            at = [j for j, point in enumerate(points[i]) if _matches(point, group)]
            for axis, direction in choice.edges():
                found[i, axes.index(axis), DIRECTIONS.index(direction), at] = True
    return found


def next_round(config: Config, found: np.ndarray, extensions: list[Extension]) -> list[Extension]:
    """The extensions that the `edges` found call for, after `extensions`: each one step further that way, for
    the configurations found there, where report.tune_extensions leaves one."""
    axes, limit, study_cells = config.report.tune, config.report.tune_extensions, cells(config)
    new = []
    for i, a, d in np.argwhere(found.any(-1)).tolist():  # Python ints: a NumPy step would make values np.float64
        axis, direction = axes[a], DIRECTIONS[d]
        step = 1 + sum((e.cell, e.axis, e.direction) == (i, axis, direction) for e in extensions)
        if step <= limit:
            points = configurations(config, study_cells[i])
            new.append(Extension(i, axis, direction, step, tuple(points[j] for j in np.flatnonzero(found[i, a, d]))))
    return new


def searched_grids(config: Config, study_cells: list[Cell], extensions: list[Extension]) -> dict:
    """Each cell's grid of each tuned axis as searched, in the config's units (learning rates before batch
    scaling): the config's own values and those its extensions added for some of its configurations (summary.md
    lists each configuration's). config.json records it."""
    return {
        cell.label(): {
            axis: sorted([*grid(config, axis), *(e.value(config) for e in extensions if (e.cell, e.axis) == (i, axis))])
            for axis in config.report.tune
        }
        for i, cell in enumerate(study_cells)
    }


def _key(values) -> tuple[str, ...]:
    """Key columns' values as text that reads the same from the config (Python values) as from metrics.csv."""
    return tuple(repr(float(v)) if isinstance(v, float | np.floating) else str(v) for v in values)


def own_grids(config: Config) -> dict[tuple[str, ...], dict[str, tuple]]:
    """Each configuration's values of the tuned axes from the config's own grid, as metrics.csv writes them (a
    learning rate scaled with its cell's batch), by its other key columns (`_key` of a `Choice.group`'s values):
    what an extension added lies outside them."""
    tuned = config.report.tune
    others = [c for c in run_columns(config) if c not in tuned and c != "seed"]
    grids: dict[tuple[str, ...], dict[str, set]] = {}
    for cell in cells(config):
        for run in plan(config, cell).keys():
            own = grids.setdefault(_key(run[c] for c in others), {axis: set() for axis in tuned})
            for axis in tuned:
                own[axis].add(run[axis])
    return {key: {axis: tuple(sorted(values)) for axis, values in own.items()} for key, own in grids.items()}


def beyond(choice: Choice, own: dict[tuple[str, ...], dict[str, tuple]]) -> dict[str, set]:
    """Per tuned axis, the values that `choice`'s configuration tried beyond the config's own grid (`own_grids`)."""
    grids = own.get(_key(v for _, v in choice.group), {})
    return {
        axis: {v for v in tried if axis in grids and not grids[axis][0] <= v <= grids[axis][-1]}
        for axis, tried in choice.tried
    }


def edge_steps(choice: Choice, own: dict[tuple[str, ...], dict[str, tuple]]) -> dict[tuple[str, int], int]:
    """For each edge that `choice` sits at, (axis, direction): how many values its configuration tried beyond the
    config's own grid that way (`own_grids`), which a finished run takes up to report.tune_extensions."""
    added, tried = beyond(choice, own), dict(choice.tried)
    steps = {}
    for axis, direction in choice.edges():
        inside = [v for v in tried[axis] if v not in added[axis]]
        steps[axis, direction] = sum(v > max(inside) if direction > 0 else v < min(inside) for v in added[axis])
    return steps


def step_rule(axis: str) -> str:
    return "x2 above, /2 below" if axis == "learning_rate" else "by the ratio of its two outermost values"


def extension_text(config: Config, cost: Estimate | None = None) -> str:
    """What `report.tune_extensions` may add to a run of `config`, at worst, for `normbench show`; "" where it adds
    nothing. `cost`: the estimate of the config's own cells, which the extensions' is a share of."""
    limit, axes = config.report.tune_extensions, config.report.tune
    if not (limit and axes):
        return ""
    study_cells = cells(config)
    runs = sum(plan(config, cell).run_count for cell in study_cells)
    share, programs = _worst_share(config)
    stepping = []
    for axis in axes:
        below, above = ([step_value(config, axis, d, s) for s in range(1, limit + 1)] for d in DIRECTIONS)
        stepping.append(f"{axis} {step_rule(axis)}: {', '.join(f'{v:g}' for v in below[::-1])} below, "
                        f"{', '.join(f'{v:g}' for v in above)} above")  # fmt: skip
    text = (
        f"report.tune_extensions={limit}: a choice at an edge of its grid trains the next value beyond it in its "
        f"cell and chooses again, up to {limit} step(s) each way ({'; '.join(stepping)}); at worst "
        f"{round(runs * share):,} more runs (+{100 * share:.0f}%) in {programs * len(study_cells)} more programs"
    )
    if cost is None:
        return text
    return f"{text}, {worst_extensions(config, cost).time_text()}"


def _worst_share(config: Config) -> tuple[float, int]:
    """(The share of each cell's runs, the programs per cell) that `report.tune_extensions` may add, at worst: each
    step each way adds 1/n of a cell's runs (n: the axis's values), all its steps, in one more program."""
    limit, axes = config.report.tune_extensions, config.report.tune
    return sum(2 * limit / len(grid(config, axis)) for axis in axes), 2 * limit * len(axes)


def worst_extensions(config: Config, cost: Estimate) -> Estimate:
    """The estimate of what `report.tune_extensions` may add to a run of `config` whose own cells' is `cost`."""
    share, programs = _worst_share(config)
    return dataclasses.replace(
        cost,
        cell_flops=tuple(round(flops * share) for flops in cost.cell_flops),
        cell_steps=tuple(steps * programs for steps in cost.cell_steps),
    )
