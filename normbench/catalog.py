"""What `normbench list` and `normbench show` print: the registries, the data sources, the study configs and one
resolved config, as plain text."""

from __future__ import annotations

import ast
import dataclasses
import math
import sys
import textwrap
from pathlib import Path

from normbench.config import Config

CONFIGS_DIR = Path("configs")


# What `normbench list` prints fits a terminal of this many columns: the last column wraps.
WIDTH = 100


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], notes: list[str] | None = None) -> str:
    """Columns padded to their widest cell, the last one wrapped onto continuation lines to fit `WIDTH`; each
    row's `notes` entry, if given, follows it on indented lines of its own."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    indent = sum(widths) + 2 * len(widths)
    last = max(WIDTH - indent, 20)

    def lines(row):
        wrapped = textwrap.wrap(row[-1], last, break_on_hyphens=False) or [""]
        first = "".join(cell.ljust(w + 2) for cell, w in zip(row, widths))
        return [(first + wrapped[0]).rstrip(), *(" " * indent + more for more in wrapped[1:])]

    out = [*lines(header), "  ".join("-" * w for w in [*widths, min(last, max(len(r[-1]) for r in [header, *rows]))])]
    for i, row in enumerate(rows):
        out += lines(row)
        if notes:
            out += textwrap.wrap(
                notes[i], WIDTH, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
            )
    return "\n".join(out)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def norms_table() -> str:
    """One row of facts per norm, its summary and options on the lines below."""
    from normbench.norms import NORMS

    header = ("name", "batch-dep.", "run. stats", "fused act.", "scale-inv.", "reduces over")
    rows = [
        (
            s.name,
            *map(_yes, (s.batch_dependent, s.running_stats, s.fuses_activation, s.scale_invariant)),
            s.reduces_over,
        )
        for s in NORMS.values()
    ]
    notes = [f"{s.summary}; options: {', '.join(s.options) or 'none'}" for s in NORMS.values()]
    return _table(header, rows, notes)


def models_table() -> str:
    from normbench.models import MODELS

    docs = {name: sys.modules[spec.module.__module__].__doc__ for name, spec in MODELS.items()}
    rows = [(name, doc.strip().splitlines()[0]) for name, doc in docs.items()]
    return _table(("name", "summary"), rows)


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring, whole: its first paragraph's lines joined, through the first '.', '?'
    or '!' that ends a word outside parentheses ("(..., ch. 6)" does not end one)."""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    depth = 0
    for i, char in enumerate(paragraph):
        depth += (char == "(") - (char == ")")
        if char in ".?!" and depth == 0 and paragraph[i + 1 : i + 2] in ("", " "):
            return paragraph[: i + 1]
    return paragraph


def configs_table(directory: Path = CONFIGS_DIR) -> str:
    """Each study config under `directory` with the first sentence of its docstring, read without running it."""
    rows = []
    for path in sorted(directory.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        rows.append((str(path), first_sentence(doc) or "-"))
    if not rows:
        return f"no study configs in {directory}/ (run normbench from the repository root)"
    return _table(("config", "summary"), rows)


def datasets_table() -> str:
    """The forms of `data.source`, then the TFDS data sets already prepared, which read with no network."""
    from normbench.data import SOURCES, tfds_data_dir, tfds_prepared

    rows = list(SOURCES.items())
    rows += [(f"tfds:{name}", f"prepared in {tfds_data_dir()}") for name in tfds_prepared()]
    return _table(("data.source", "summary"), rows)


def protocols_table() -> str:
    from normbench.protocols import PROTOCOLS

    rows = [
        (p.name, "batch-dependent only" if p.batch_dependent_only else "all", p.summary) for p in PROTOCOLS.values()
    ]
    return _table(("protocol", "norms", "summary"), rows)


def listing(what: str) -> str:
    tables = {"norms": norms_table, "models": models_table, "protocols": protocols_table, "datasets": datasets_table,
              "configs": configs_table}  # fmt: skip
    return tables[what]()


def setting(value) -> str:
    """A config value as `--set` reads it back."""
    if value == ():
        return "()"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        if any(isinstance(v, str) and "," in v for v in value):  # a claim: only a Python literal keeps its commas
            return repr(value)
        return ",".join(setting(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def flat_fields(config) -> dict:
    """Every leaf field of a config by its dotted `--set` name, in declaration order."""
    flat = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            flat.update({f"{f.name}.{k}": v for k, v in flat_fields(value).items()})
        else:
            flat[f.name] = value
    return flat


def config_text(config: Config) -> str:
    """The resolved config, one `key = value` line per field (a value that differs from normbench's default
    says so), then what running it costs in compiled programs and runs."""
    from normbench.core.axes import axes
    from normbench.core.grid import cells, plan

    defaults = flat_fields(Config())
    fields = flat_fields(config)
    width = max(map(len, fields))
    lines = []
    for key, value in fields.items():
        line = f"{key:<{width}} = {setting(value)}"
        lines.append(line if value == defaults[key] else f"{line}  # default: {setting(defaults[key])}")
    lines.append("# sweep axes (static: one compiled program per value; value: vmapped inside it)")
    lines += [f"#   {axis.column:<{width - 2}} {axis.kind:<6}  {axis.source}" for axis in axes(config)]
    lines.append("# effective values per cell (cells differing only in model or norm share a line where values agree)")
    lines += [f"#   {where}: {values}" for where, values in effective_values(config).items()]
    todo = cells(config)
    runs = sum(plan(config, cell).run_count for cell in todo)
    plural = "" if len(todo) == 1 else "s"
    lines.append(f"# {len(todo)} cell{plural} (one compiled program each), {runs} runs of {config.train.epochs} epochs")
    lines += unread_lines(config)
    return "\n".join(lines)


def unread_lines(config: Config) -> list[str]:
    """A line for each norm that reads some swept value field not (`normbench.core.grid.unread_fields`): the one
    value its runs train at, and how many runs that saves."""
    from normbench.core.grid import cells, plan, unread_fields

    saved: dict[str, int] = {}
    for cell in cells(config):
        every = math.prod(len(config.sweep.fields[key]) for key in unread_fields(config, cell.norm))
        saved[cell.norm] = saved.get(cell.norm, 0) + plan(config, cell).run_count * (every - 1)
    lines = []
    for norm, runs in saved.items():
        unread = unread_fields(config, norm)
        if unread:
            at = ", ".join(f"{key}={setting(value)}" for key, value in unread.items())
            lines.append(f"# {norm} reads no {' or '.join(unread)}: its runs train once, at {at}, which stands for "
                         f"every value ({runs} runs saved)")  # fmt: skip
    return lines


def effective_values(config: Config) -> dict[str, str]:
    """Each cell's learning rates after linear scaling with its SGD batch (`train.lr_reference_batch`) and the
    examples each batch statistic sees (`ghost_size`), which the config's own fields do not show."""
    from normbench.core.grid import cells, plan

    def numbers(values) -> str:
        return ",".join(f"{v:.6g}" for v in dict.fromkeys(values))

    by_values = {}
    for cell in cells(config):
        where = " ".join([cell.protocol, f"batch={cell.batch_size}", *(f"{k}={v}" for k, v in cell.fields)])
        values = plan(config, cell).run_values
        text = f"learning_rate={numbers(values['learning_rate'])} ghost_size={numbers(values['ghost_size'])}"
        by_values.setdefault(where, {}).setdefault(text, []).append(cell.norm)
    # Under `ghost` a norm without batch statistics runs at one size: its cells get a line of their own.
    return {
        where if len(texts) == 1 else f"{where} ({','.join(dict.fromkeys(norms))})": text
        for where, texts in by_values.items()
        for text, norms in texts.items()
    }
