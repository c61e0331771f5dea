"""The scorecard of every complete norm in a scorecard's directory, from its results alone (no training):

- each test's results directory over every norm (`OUT/<test>/`: the norms' `metrics.csv` joined, the test's
  figures and summary.md), which `normbench plot`, `report` and `compare` read like any study's;
- `scorecard.csv`: one row per norm and measure: mean, 95% interval and n (seeds, or the cost test's rounds), and
  the paired difference from BatchNorm and from LayerNorm with its interval, Holm-adjusted p and verdict;
- `scorecard.md`: the same as tables, and a line per norm ("better than LayerNorm on ..., not significantly
  different on ...");
- `scorecard.png`: one panel per measure, the norms down its side, each mean with its interval; open markers are
  the batch-independent norms, dashed lines BatchNorm's and LayerNorm's means.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from normbench.norms import NORMS
from normbench.reports.labels import norm_label
from normbench.reports.plots import draw_figures, figure_bytes
from normbench.results.claims import p_text
from normbench.results.manifest import sign
from normbench.results.reader import read_results
from normbench.results.store import CONFIG, METRICS, atomic_write, exclusive, replace, write_config
from normbench.results.swap import start as start_replacement
from normbench.results.table import join_tables
from normbench.scoring.battery import BY_CONSTRUCTION, BY_NAME, NOT_APPLICABLE, REFERENCES, TEST_NAMES, for_norms
from normbench.scoring.cost import ratios
from normbench.scoring.layout import COST, NORM, RUNS
from normbench.scoring.scores import MEASURES, Difference, Measure, Score, compare
from normbench.study import OWNED

FILES = ("scorecard.md", "scorecard.csv", "scorecard.png")


def complete_norms(out: Path) -> list[str]:
    """The norms whose battery is complete in `out`: the references first, then in the registry's order, then any
    this process has not registered (a user's norm from another session), by name."""
    found = {path.parent.name for path in (Path(out) / RUNS).glob(f"*/{NORM}")}
    order = [*REFERENCES, *(n for n in NORMS if n not in REFERENCES), *sorted(found - set(NORMS))]
    return [n for n in order if n in found]


def facts(out: Path, norm: str) -> dict:
    return json.loads((Path(out) / RUNS / norm / NORM).read_text())


def scores(out: Path, norms: list[str]) -> dict[str, dict[str, Score]]:
    """norm -> measure name -> its Score, read from each norm's results."""
    found = {}
    for norm in norms:
        mine = found[norm] = {}
        runs = Path(out) / RUNS / norm
        timings = (runs / COST).read_text()
        skipped = facts(out, norm).get("not_applicable", {})
        for measure in MEASURES:
            if measure.name in skipped:
                mine[measure.name] = Score(None, not_applicable=skipped[measure.name])
            elif measure.per_seed is None:
                mine[measure.name] = Score(ratios(timings, measure.cost_model))
            elif (runs / measure.test / METRICS).is_file():
                results = read_results(runs / measure.test)
                mine[measure.name] = Score(*measure.per_seed(results.columns, results.config))
            elif measure.by_construction and not facts(out, norm)["batch_dependent"]:
                mine[measure.name] = Score(None)
    return found


def write_test_directory(out: Path, test: str, norms: list[str]) -> None:
    """`OUT/<test>/`: one results directory of the test over `norms` (those that ran it), written beside it and
    swapped in whole, signed as a run signs its own (`normbench.results.manifest`)."""
    sources = [Path(out) / RUNS / n / test for n in norms if (Path(out) / RUNS / n / test / METRICS).is_file()]
    if not sources:
        return
    runs = [read_results(source) for source in sources]
    config = dataclasses.replace(for_norms(runs[0].config, tuple(s.parent.name for s in sources)),
                                 figures=BY_NAME[test].figures)  # fmt: skip
    searched = {cell: grids for r in runs for cell, grids in r.meta.get("searched_grids", {}).items()}
    meta = {"input_shape": list(runs[0].input_shape), "scorecard_runs": [str(s.relative_to(out)) for s in sources],
            **({"searched_grids": searched} if searched else {})}  # fmt: skip
    target = Path(out) / test
    target.mkdir(exist_ok=True)
    with exclusive(target) as lock:
        new = start_replacement(target)
        atomic_write(new / METRICS, join_tables([r.metrics_text for r in runs]))
        drawn = draw_figures(new, config=config, input_shape=runs[0].input_shape)
        write_config(new, config, meta)
        sign(new, [METRICS, *(path.name for path in drawn), CONFIG])
        replace(target, new, OWNED, lock)


def rows(found: dict[str, dict[str, Score]]) -> list[dict]:
    """scorecard.csv's rows: one per norm and measure it has."""
    table = []
    for norm, mine in found.items():
        differences = compare(found, norm)
        for measure in MEASURES:
            if measure.name not in mine:
                continue
            score = mine[measure.name]
            mean, half, n = score.mean_ci
            row = {"norm": norm, "test": measure.name, "mean": _number(mean * measure.scale),
                   "ci_low": _number((mean - half) * measure.scale), "ci_high": _number((mean + half) * measure.scale),
                   "n": n, "unit": measure.unit,
                   "note": score.not_applicable or (BY_CONSTRUCTION if score.values is None else
                           (f"{score.dropped} seed(s) left out: a run diverged" if score.dropped else ""))}  # fmt: skip
            for reference in REFERENCES:
                row.update(_difference_columns(differences.get((measure.name, reference)), reference, measure))
            table.append(row)
    return table


def _number(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "nan"


def _difference_columns(d: Difference | None, reference: str, measure: Measure) -> dict:
    prefix = f"minus_{reference}"
    if d is None:
        return {f"{prefix}{k}": "" for k in ("", "_ci_low", "_ci_high", "_n", "_holm_p", "_verdict")}
    return {
        prefix: _number(d.mean * measure.scale),
        f"{prefix}_ci_low": _number((d.mean - d.half_width) * measure.scale),
        f"{prefix}_ci_high": _number((d.mean + d.half_width) * measure.scale),
        f"{prefix}_n": d.seeds,
        f"{prefix}_holm_p": _number(d.adjusted_p),
        f"{prefix}_verdict": verdict(d),
    }


def verdict(d: Difference) -> str:
    """Every paired measure is better higher."""
    if d.seeds < 2 or not np.isfinite(d.adjusted_p):
        return "too few seeds"
    if not d.significant():
        return "not significantly different"
    return "better" if d.mean > 0 else "worse"


def csv_text(table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def markdown(table: list[dict], norms: list[str], quick: bool) -> str:
    by = {(row["norm"], row["test"]): row for row in table}
    measures = [m for m in MEASURES if any((n, m.name) in by for n in norms)]
    lines = ["# Scorecard", ""]
    if quick:
        lines += ["**The tiny battery (`--quick`): a test of the machinery, whose numbers mean nothing.**", ""]
    lines += [
        "Every norm through the same battery (`normbench.scoring.battery`): mean and 95% interval over the seeds "
        "(over the timing rounds for the cost), at the learning rate tuned on validation where the test tunes it. "
        "Differences from BatchNorm and LayerNorm are paired by seed; each norm's verdicts are Holm-adjusted over "
        "its own comparisons (p < 0.05 after adjustment: better or worse). Each test's runs are in its results "
        "directory (`normbench plot/report/compare` read them); every number here is recomputed from them by "
        "`normbench scorecard` with the norms that are finished.",
        "",
        "| norm | " + " | ".join(f"{m.title} ({m.unit})" for m in measures) + " |",
        "| --- |" + " --- |" * len(measures),
    ]
    for norm in norms:
        cells = [_cell(by.get((norm, m.name))) for m in measures]
        lines.append(f"| {norm_label(norm)} | " + " | ".join(cells) + " |")
    lines += ["", "## Against BatchNorm and LayerNorm", ""]
    for norm in norms:
        against = [_against(by, norm, r, measures) for r in REFERENCES if r != norm]
        lines.append(f"- **{norm_label(norm)}**: " + " ".join(f"{part[0].upper()}{part[1:]}." for part in against))
    lines += ["", "## Paired differences", "",
              "| norm | test | " + " | ".join(f"minus {norm_label(r)} [95% CI] (n), Holm p" for r in REFERENCES) + " |",
              "| --- | --- |" + " --- |" * len(REFERENCES)]  # fmt: skip
    for row in table:
        if any(row[f"minus_{r}"] != "" for r in REFERENCES):
            cells = [f"{row[f'minus_{r}']} [{row[f'minus_{r}_ci_low']}, {row[f'minus_{r}_ci_high']}] "
                     f"({row[f'minus_{r}_n']}), {p_text(float(row[f'minus_{r}_holm_p']))}: {row[f'minus_{r}_verdict']}"
                     if row[f"minus_{r}"] != "" else "-" for r in REFERENCES]  # fmt: skip
            lines.append(f"| {norm_label(row['norm'])} | {row['test']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row["note"] == BY_CONSTRUCTION:
        return "0 (by construction)"
    if row["note"].startswith(NOT_APPLICABLE):
        return "n/a"
    if not row["n"]:
        return f"- ({row['note']})" if row["note"] else "-"
    return f"{row['mean']} [{row['ci_low']}, {row['ci_high']}] ({row['n']})"


VERDICT_WORDS = {"better": "better than", "worse": "worse than", "not significantly different": "not significantly "
                 "different from", "too few seeds": "too few seeds to compare with"}  # fmt: skip


def _against(by: dict, norm: str, reference: str, measures: list[Measure]) -> str:
    """Its verdicts against `reference` as words: "better than LayerNorm on X; not significantly different from
    LayerNorm on Y, Z", the verdicts in a fixed order."""
    grouped: dict[str, list[str]] = {verdict: [] for verdict in VERDICT_WORDS}
    for m in measures:
        row = by.get((norm, m.name))
        if row is not None and row[f"minus_{reference}"] != "":
            grouped[row[f"minus_{reference}_verdict"]].append(m.name)
    label = norm_label(reference)
    parts = [f"{VERDICT_WORDS[v]} {label} on {', '.join(names)}" for v, names in grouped.items() if names]
    return "; ".join(parts) or f"no paired comparison with {label}"


def figure(data, _config=None):
    """One panel per measure, the norms down the side (the first at the top), each mean with its 95% interval."""
    import matplotlib.pyplot as plt

    table, norms, independent = data
    measures = [m for m in MEASURES if any(row["test"] == m.name for row in table)]
    columns = min(len(measures), 4)
    panel_rows = -(-len(measures) // columns)
    height = panel_rows * (0.25 * len(norms) + 1.0) + 0.8
    fig, axes = plt.subplots(panel_rows, columns, figsize=(3.2 * columns, height), sharey=True, squeeze=False)
    ys = {norm: len(norms) - 1 - i for i, norm in enumerate(norms)}
    for ax, measure in zip(axes.flat, measures):
        for row in (r for r in table if r["test"] == measure.name):
            inapplicable = row["note"].startswith(NOT_APPLICABLE)
            mean, low, high = (np.nan if inapplicable else float(row[k]) for k in ("mean", "ci_low", "ci_high"))
            if not np.isfinite(mean):  # inapplicable, or no seed left (all diverged): said where its marker goes
                text = "n/a" if inapplicable else f"n/a ({row['note']})"
                ax.text(0.02, ys[row["norm"]], text, transform=ax.get_yaxis_transform(), va="center", fontsize=7)
                continue
            if row["note"] == BY_CONSTRUCTION:  # a value no run measured
                ax.plot([mean], [ys[row["norm"]]], "d", color="0.5", mfc="white", markersize=5,
                        label="0 by construction (batch-independent, not trained)")  # fmt: skip
                continue
            free = row["norm"] in independent
            ax.errorbar([mean], [ys[row["norm"]]], xerr=[[mean - low], [high - mean]] if np.isfinite(low) else None,
                        fmt="s" if free else "o", mfc="white" if free else "C0", color="C0", capsize=2, markersize=4,
                        label="batch-independent" if free else "batch-dependent")  # fmt: skip
            if row["norm"] in REFERENCES:
                ax.axvline(mean, color="C1" if row["norm"] == "batch" else "C2", linestyle="--", linewidth=0.8,
                           label=norm_label(row["norm"]))  # fmt: skip
        ax.set_title(measure.title, fontsize=9)
        ax.set_xlabel(measure.unit, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(measures) :]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(list(ys.values()), [norm_label(n) for n in ys])
    axes[0, 0].set_ylim(-0.6, len(norms) - 0.4)
    for ax in axes[:, 0]:
        ax.tick_params(axis="y", labelsize=8)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 3), fontsize=8,
               frameon=False)  # fmt: skip
    fig.suptitle("Scorecard: mean and 95% CI (seeds; rounds for the cost)", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / fig.get_size_inches()[1], 1, 1))
    return fig


def write_scorecard(out: Path, quick: bool = False) -> list[Path]:
    """The per-test directories and the scorecard's files over every complete norm in `out`; returns the files."""
    out = Path(out)
    norms = complete_norms(out)
    for test in TEST_NAMES:
        write_test_directory(out, test, norms)
    found = scores(out, norms)
    table = rows(found)
    independent = {n for n in norms if not facts(out, n)["batch_dependent"]}
    atomic_write(out / "scorecard.csv", csv_text(table))
    atomic_write(out / "scorecard.md", markdown(table, norms, quick))
    atomic_write(out / "scorecard.png", figure_bytes(figure, (table, norms, independent), None))
    return [out / name for name in FILES]
