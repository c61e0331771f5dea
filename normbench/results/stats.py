"""Statistics over seeds: the mean with a Student-t 95% confidence interval."""

import numpy as np

from normbench.core.axes import key_columns


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the `level` confidence interval); the half-width is NaN for fewer than 2 values."""
    from scipy.special import stdtrit  # the Student-t quantile that scipy.stats wraps, without its slow import

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    sem = values.std(ddof=1) / np.sqrt(len(values))
    return mean, float(stdtrit(len(values) - 1, 0.5 + level / 2) * sem)


def final_epoch(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of each run's last epoch."""
    last = columns["epoch"] == columns["epoch"].max()
    return {k: v[last] for k, v in columns.items()}


def norm_batch(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The number of examples a norm's batch statistics see: the `ghost_size` column, which holds the SGD batch,
    the ghost group, or one device's batch (`per_device`) or all devices' (`sync`)."""
    return columns["ghost_size"]


def per_run(columns: dict[str, np.ndarray], rows: np.ndarray, metric: str) -> np.ndarray:
    """`metric` over the selected rows as a (run, epoch) array, whatever order the table's rows are in."""
    keys = key_columns(columns)
    order = np.lexsort([columns["epoch"][rows]] + [columns[k][rows] for k in reversed(keys)])
    return columns[metric][rows][order].reshape(-1, len(np.unique(columns["epoch"][rows])))
