"""What `normbench list` prints: the registries and the study configs, as plain-text tables."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CONFIGS_DIR = Path("configs")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def norms_table() -> str:
    from normbench.norms import NORMS

    header = ("name", "batch-dependent", "running stats", "fused activation", "scale-invariant", "reduces over",
              "options", "summary")  # fmt: skip
    rows = [
        (
            s.name,
            _yes(s.batch_dependent),
            _yes(s.running_stats),
            _yes(s.fuses_activation),
            _yes(s.scale_invariant),
            s.reduces_over,
            ", ".join(s.options) or "-",
            s.summary,
        )  # fmt: skip
        for s in NORMS.values()
    ]
    return _table(header, rows)


def models_table() -> str:
    from normbench.models import MODELS

    docs = {name: sys.modules[spec.module.__module__].__doc__ for name, spec in MODELS.items()}
    rows = [(name, doc.strip().splitlines()[0]) for name, doc in docs.items()]
    return _table(("name", "summary"), rows)


def configs_table(directory: Path = CONFIGS_DIR) -> str:
    """Each study config under `directory` with the first line of its docstring, read without running it."""
    rows = []
    for path in sorted(directory.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        rows.append((str(path), doc.splitlines()[0] if doc else "-"))
    if not rows:
        return f"no study configs in {directory}/ (run normbench from the repository root)"
    return _table(("config", "summary"), rows)


def listing(what: str) -> str:
    return {"norms": norms_table, "models": models_table, "configs": configs_table}[what]()
