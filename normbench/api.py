"""normbench from Python (a notebook, a script): run a study, load its results, register a norm.

    import normbench

    out = normbench.run("configs/init_scale.py", train__epochs=2, sweep__seeds=(0,))  # Path("runs/init_scale")
    df = normbench.load(out)  # metrics.csv as a pandas DataFrame; df.attrs["config"] the resolved config as JSON

These are re-exported by `normbench/__init__.py`, which must stay light: JAX and pandas are imported inside the
functions, so that `import normbench` (and `normbench --help`) take no time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from normbench.config import Config
    from normbench.norms import NormSpec
    from normbench.reports.progress import Progress

# Where a run writes unless told otherwise: git-ignored, like the workdir of flax's examples. The committed
# `results/` is written only when asked for by name (`--out results/<name>`).
RUNS = Path("runs")


def default_out(name: str) -> Path:
    return RUNS / name


def run(
    config: Config | str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    workers: int | None = None,
    processes: int | None = None,
    progress: Progress | None = None,
    **overrides,
) -> Path:
    """Train every run of `config` (a `Config`, or the path of a config file) as `normbench run` does, and return
    the results directory: `out`, by default `runs/<config name>`.

    `overrides` set config fields by their dotted names, written with `__` for the dots (`train__epochs=2`) or
    unpacked from a dict (`**{"train.epochs": 2}`); their values are Python values, checked against the field's
    type like `--set`'s text: `sweep__norms=("batch", "layer")`, `sweep__fields={"norm.num_groups": (1, 2, 4)}`.
    `force`, `workers`, `processes` (None: `auto`): as `normbench run`'s options; `progress` hears of each cell
    (default: the "normbench" logger's lines)."""
    from normbench.config import Config, load_config, set_fields
    from normbench.study import run_study
    from normbench.validate import validate

    if not isinstance(config, Config):
        config = load_config(config)
    config = set_fields(config, {key.replace("__", "."): value for key, value in overrides.items()})
    validate(config)
    out = Path(out) if out is not None else default_out(config.name)
    run_study(config, out, progress, force=force, workers=workers, processes=processes)
    return out


def load(results_dir: str | Path, *, trust_edits: bool = False) -> pd.DataFrame:
    """A results directory's `metrics.csv` (one row per run and epoch, docs/results.md) as a pandas DataFrame, with
    the config that produced it in `df.attrs["config"]`, as config.json holds it (`df.attrs["config"]["train"]
    ["epochs"]`; `normbench.config.from_dict(Config, ...)` makes it a `Config`). A table written before a column
    existed (`normbench.results.store.LATER_COLUMNS`) gets it as NaN.

    Read as `normbench plot` reads it (`normbench.results.reader`): a damaged table is refused in one line, and so
    is a metrics.csv or config.json that changed since its run wrote it (the directory's manifest.json tells),
    unless `trust_edits`; a changed figure or summary.md is a warning (`normbench.results.reader.ResultsWarning`)."""
    import io
    import json

    import numpy as np
    import pandas as pd

    from normbench.config import to_dict
    from normbench.results.reader import read_results
    from normbench.results.store import LATER_COLUMNS

    results = read_results(results_dir, trust_edits)
    df = pd.read_csv(io.StringIO(results.metrics_text))
    for column in LATER_COLUMNS:
        if column not in df:
            df[column] = np.nan
    # JSON, not a Config: pandas writes attrs into a parquet file as JSON (to_parquet raised on a Config), and
    # read_parquet gives back the same dict, lists where the Config has tuples
    df.attrs["config"] = json.loads(json.dumps(to_dict(results.config)))
    return df


def register_norm(spec: NormSpec, replace: bool = False) -> NormSpec:
    """Add `spec` to the norm registry for this process, so that configs can name it in `sweep.norms`
    (docs/adding_a_norm.md). A name already registered is an error unless `replace`: a typo should not silently
    shadow a built-in norm."""
    from normbench.norms import NORMS

    if spec.name in NORMS and not replace:
        raise ValueError(f"a norm named {spec.name!r} is already registered; pass replace=True to replace it")
    NORMS[spec.name] = spec
    return spec


def scorecard(
    norms: Sequence[str] | None = None,
    out: str | Path | None = None,
    *,
    quick: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Put `norms` (default: every registered norm, one registered with `register_norm` included) through the
    scorecard's battery as `normbench scorecard` does, BatchNorm and LayerNorm always among them, and return its
    directory: `out`, by default `runs/scorecard`, which then holds scorecard.md, scorecard.csv and scorecard.png
    over every norm finished there. Runs already there are not trained again. `quick`: the tiny battery, a test of
    the machinery (`normbench.scoring.battery`)."""
    from normbench.scoring.run import run_scorecard

    return run_scorecard(norms, Path(out) if out is not None else default_out("scorecard"), quick, progress, workers)
