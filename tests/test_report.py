"""`normbench report`: one self-contained HTML page of a results directory, checked as HTML and, where a
Chromium is installed, as a browser draws it."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from normbench.catalog import flat_fields
from normbench.cli import main
from normbench.config import Config
from normbench.reports.report import markdown_html

ROOT = Path(__file__).resolve().parent.parent
INIT_SCALE = ROOT / "results" / "init_scale"


class Page(HTMLParser):
    """The tags, attributes and text of a page."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [attrs for t, attrs in self.tags if t == tag]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "init_scale.html"
    assert main(["report", str(INIT_SCALE), "--output", str(path)]) == 0
    return path


def test_the_report_is_one_page_with_the_figures_the_tables_and_the_config(report):
    page = Page(report.read_text())
    (image,) = page.all("img")  # the config lists one figure
    prefix = "data:image/png;base64,"
    assert image["src"].startswith(prefix) and image["alt"] == "init_scale"
    assert base64.b64decode(image["src"][len(prefix) :]).startswith(b"\x89PNG\r\n\x1a\n")
    # Self-contained: nothing to fetch, no script to run; every link points inside the page.
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    assert all(a["href"].startswith("#") for a in page.all("a"))
    text = " ".join(page.text)
    saved = json.loads((INIT_SCALE / "config.json").read_text())
    for fact in (
        "96 runs of 20 epochs",
        saved["environment"]["jax"],
        saved["environment"]["device"],
        "Every configuration",
    ):
        assert fact in text
    # The summary table's 32 rows (2 norms x 16 init scales), the config's fields, the environment
    assert len(page.all("table")) == 3
    fields = len(flat_fields(Config()))
    where = len(saved["environment"]) + len(saved["timings"]) + len(saved.get("compilation", {}))
    assert len(page.all("tr")) == (1 + 32) + (1 + fields) + where


def test_summary_markdown_becomes_headings_paragraphs_and_tables():
    html = markdown_html("# Title\n\nSome `code` & text\nwrapped.\n\n| a | b |\n|---|---|\n| 1 | <2> |\n")
    assert html == (
        "<h1>Title</h1>\n<p>Some <code>code</code> &amp; text wrapped.</p>\n"
        "<table><tr><th>a</th><th>b</th></tr>\n<tr><td>1</td><td>&lt;2&gt;</td></tr></table>"
    )


def test_report_of_a_missing_results_dir_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not found: is" in capsys.readouterr().err


def test_headless_chromium_shows_the_figure_and_the_tables(report, tmp_path):
    from scripts.screenshot_report import find_browser, screenshot

    if find_browser() is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    png = screenshot(report, tmp_path / "report.png", width=1200)
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    height = pixels.shape[0]
    assert height > 2500  # a 4x4 grid of panels, then ~70 table rows
    # The figure's blue and orange curves and bands sit in the top third (~30,000 such pixels; the page without
    # its image has ~2,000, in the blue links); the tables' text below them is dark grey on white.
    colourful = (np.abs(pixels[..., 0] - pixels[..., 2]) > 30).sum(axis=1)
    assert colourful[: height // 3].sum() > 10_000
    dark = (pixels.max(axis=2) < 100).sum(axis=1)
    assert (dark[height // 3 :] > 0).sum() > 500  # rows of table text
