"""`report.html`: one self-contained page per results directory, to open in any browser or send to anyone.

It holds the config's figures and any layer diagnostics' (PNG, base64-embedded), the summary tables of
`summary.md`, the resolved config (values that differ from normbench's defaults in bold) and where the results
came from: versions, device, git revision, command and timings, all read from the results directory's files.
Nothing is fetched when the page is opened: no scripts, no stylesheets, no fonts, no images from elsewhere.

    normbench report results/init_scale        # writes results/init_scale/report.html
"""

from __future__ import annotations

import base64
import html
import inspect
from pathlib import Path

import numpy as np
from markdown_it import MarkdownIt

from normbench.catalog import flat_fields, setting
from normbench.config import Config
from normbench.errors import UserError
from normbench.reports.plots import writing_into
from normbench.reports.summary import input_shape_of, summary_markdown
from normbench.results.reader import Results, reading
from normbench.results.store import atomic_write

REPORT = "report.html"
# CommonMark with GitHub's pipe tables; raw HTML in the text is escaped rather than passed through, so nothing a
# config names (a claim, a norm) becomes markup in the page.
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       max-width: 1500px; margin: 0 auto; padding: 1.5em 2em 4em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; margin-top: 0; } nav a { margin-right: 1.2em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; max-width: 75em; font-size: 14px; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; font-size: 13px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
code { font: 12.5px ui-monospace, Menlo, Consolas, monospace; background: #f4f4f4; padding: 0 3px; }
td.changed { font-weight: 600; } table.config td { overflow-wrap: anywhere; }
table.config td:first-child, table.config td:last-child { white-space: nowrap; }
"""


def report_html(results: Results) -> str:
    """The report of a results directory (`normbench.results.reader`) as one HTML document."""
    out, config, columns, saved = results.path, results.config, results.columns, results.meta
    summary = summary_markdown(columns, config, input_shape_of(out, config))
    summary = summary.removeprefix(f"# {config.name}\n")  # the page has the title
    sections = [
        ("figures", "Figures", _figures(out, columns, config)),
        ("summary", "Summary", markdown_html(summary, first_heading=2)),
        ("config", "Config", _config_table(config)),
        ("environment", "Where and how it ran", _environment(saved)),
    ]
    nav = " ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "\n".join(f'<h2 id="{key}">{title}</h2>\n{content}' for key, title, content in sections)
    env = saved.get("environment", {})
    runs = int((columns["epoch"] == 1).sum())
    meta = f"{runs} runs of {int(columns['epoch'].max())} epochs on {config.data.source}"
    if env:
        meta += f"; finished {env.get('finished', '?')} on {env.get('device', '?')}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>normbench report: {_e(config.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{_e(config.name)}</h1>
<p class="meta">{_e(meta)}</p>
<nav>{nav}</nav>
{body}
<p class="meta">Made by <code>normbench report</code> from <code>metrics.csv</code> and <code>config.json</code> in
<code>{_e(str(out))}</code>.</p>
</body>
</html>
"""


def write_report(out: Path, path: Path | None = None, trust_edits: bool = False) -> Path:
    """Write the report of `out` to `path` (default `out/report.html`) and return where it went; `out` is held
    against a swap until it is written (`normbench.results.reader`). `trust_edits`: as `reading`'s."""
    path = Path(path) if path else Path(out) / REPORT
    if path.is_dir():  # else the write's error would name its parent
        raise UserError(f"{str(path)!r} is a directory; name the report's file, e.g. {str(path / REPORT)!r}")
    with reading(out, trust_edits) as results, writing_into(path.parent):
        atomic_write(path, report_html(results))
    return path


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _figures(out: Path, columns: dict[str, np.ndarray], config: Config) -> str:
    from normbench.reports.plots import drawings, figure_bytes

    found = drawings(out, config, columns)
    if not found:
        return "<p>This config lists no figures (<code>figures</code> in the config).</p>"
    parts = []
    for name, draw, table in found:
        data = base64.b64encode(figure_bytes(draw, table, config)).decode("ascii")
        caption = " ".join(inspect.getdoc(draw).split())
        parts.append(
            f'<figure id="figure-{_e(name)}"><img src="data:image/png;base64,{data}" alt="{_e(name)}">'
            f"<figcaption><b>{_e(name)}</b>: {_e(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def _config_table(config: Config) -> str:
    defaults = flat_fields(Config())
    rows = []
    for key, value in flat_fields(config).items():
        changed = value != defaults[key]
        default = f"default {setting(defaults[key])}" if changed else ""
        cls = ' class="changed"' if changed else ""
        rows.append(f"<tr><td><code>{_e(key)}</code></td><td{cls}>{_e(setting(value))}</td><td>{_e(default)}</td></tr>")
    return '<table class="config"><tr><th>key</th><th>value</th><th></th></tr>\n' + "\n".join(rows) + "</table>"


def _environment(saved: dict) -> str:
    env = dict(saved.get("environment", {}))
    if "command" in env:
        env["command"] = " ".join(env["command"])
    for group in ("timings", "compilation"):  # seconds by phase; compilation: tracing and XLA over all cells
        seconds = saved.get(group, {})
        env.update({f"{group}: {key.removesuffix('_s')}": f"{value:.1f} s" for key, value in seconds.items()})
    if not env:
        return "<p>config.json records no environment.</p>"
    rows = "\n".join(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in env.items())
    return f"<table>{rows}</table>"


def markdown_html(markdown: str, first_heading: int = 1) -> str:
    """Markdown (what `normbench.reports.summary` writes: headings, paragraphs, lists, bold, pipe tables, `code`)
    as HTML, rendered as GitHub renders summary.md; `#` becomes `<h{first_heading}>`."""
    tokens = MARKDOWN.parse(markdown)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + first_heading - 1, 6)}"
    return MARKDOWN.renderer.render(tokens, MARKDOWN.options, {})
