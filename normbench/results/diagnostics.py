"""`diagnostics.csv`, the layer diagnostics of every run (`normbench.core.diagnostics`), written and read."""

from __future__ import annotations

import numpy as np

from normbench.config import Config
from normbench.core.diagnostics import COLUMNS, LATER_COLUMNS, Diagnostics
from normbench.results.table import read_table, table_csv


def diagnostics_csv(config: Config, results) -> str:
    """One row per run, recorded epoch and layer; the histograms as space-separated fractions."""

    def rows(result, s, k):
        for epoch, d in sorted(result.diagnostics.items()):
            for layer in range(d.pre_std.shape[-1]):
                scalars = [f"{float(getattr(d, f)[s, k, layer]):.7g}" for f in Diagnostics._fields[:-2]]
                hists = [" ".join(f"{v:.5g}" for v in getattr(d, f)[s, k, layer]) for f in Diagnostics._fields[-2:]]
                yield [epoch, layer + 1, *scalars, *hists]

    return table_csv(config, results, COLUMNS, rows)


def read_diagnostics(path) -> dict[str, np.ndarray]:
    """`diagnostics.csv` as columns; the histograms as (rows, bins) float arrays; `LATER_COLUMNS` that an older
    table lacks as NaN."""
    columns = read_table(path, [c for c in COLUMNS if c not in LATER_COLUMNS])
    rows = len(columns["epoch"])
    return {**columns, **{c: np.full(rows, np.nan) for c in LATER_COLUMNS if c not in columns}}
