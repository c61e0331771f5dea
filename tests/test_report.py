"""`normbench report`: one self-contained HTML page of a results directory, checked as HTML and, where a
Chromium is installed (.ci/run installs one), as the text a browser shows of it."""

import base64
import html
import json
import re
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from normbench.catalog import flat_fields
from normbench.cli import main
from normbench.config import Config
from normbench.reports.report import markdown_html
from normbench.results.store import read_config

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


def test_summary_markdown_becomes_headings_lists_bold_and_tables():
    markdown = "# Title\n\nSome `code` & text\nwrapped.\n\n- first **claim**\n- second\n\n"
    markdown += "| a | b |\n|---|---|\n| 1 | <2> |\n"
    assert markdown_html(markdown, first_heading=2).replace("\n", "") == (
        "<h2>Title</h2><p>Some <code>code</code> &amp; textwrapped.</p>"
        "<ul><li>first <strong>claim</strong></li><li>second</li></ul>"
        "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>&lt;2&gt;</td></tr></tbody></table>"
    )


def test_markup_in_the_summary_text_is_shown_as_text():
    shown = markdown_html("a <script>b</script> <b>c</b>")
    assert shown == "<p>a &lt;script&gt;b&lt;/script&gt; &lt;b&gt;c&lt;/b&gt;</p>\n"


def test_report_of_a_missing_results_dir_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not found: is" in capsys.readouterr().err


# Appended to a copy of the report: once the page has loaded, replace it by what a reader sees of it (innerText:
# laid out, list markers and table rules not text, rows a line each with tabs between cells) and by each image's
# decoded size, for --dump-dom to print.
READ_BACK = """<script>
addEventListener("load", () => {
  const text = Object.assign(document.createElement("pre"), {id: "text", textContent: document.body.innerText});
  const sizes = [...document.images].map(image => `${image.naturalWidth}x${image.naturalHeight}`).join(" ");
  document.body.replaceChildren(text, Object.assign(document.createElement("pre"), {id: "images", textContent: sizes}));
});
</script>"""


def rendered(page: Path, browser: str, tmp_path: Path) -> tuple[str, str]:
    """The text headless Chromium shows of `page`, and the pixel sizes of the images it decoded."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", READ_BACK + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", probe.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    texts = dict(re.findall(r'<pre id="(\w+)">(.*?)</pre>', dom, re.S))
    return html.unescape(texts["text"]), texts["images"]


def test_headless_chromium_shows_the_claims_as_a_list_the_figure_and_the_tables(report, tmp_path):
    from scripts.screenshot_report import find_browser

    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium); .ci/run installs it")
    text, images = rendered(report, browser, tmp_path)
    headline = text.split("\nHeadline comparisons\n")[1].split("\nEvery configuration\n")[0]
    claims = [line for line in headline.splitlines() if "Holm-adjusted p" in line]
    # One line per claim of the config, each its own list item: no Markdown left in the text a reader sees.
    assert len(claims) == len(read_config(INIT_SCALE).report.claims) == 5
    assert all(line.startswith("train_acc, ") and line.endswith(": significant (Holm)") for line in claims)
    assert "**" not in headline and not re.search(r"^\s*- ", headline, re.M)
    # The figure decoded at the size of its PNG (width and height from the PNG header)
    png = base64.b64decode(Page(report.read_text()).all("img")[0]["src"].split(",", 1)[1])
    assert images == "{}x{}".format(*struct.unpack(">II", png[16:24]))
    # The summary table laid out as rows of cells: its header and 32 rows (2 norms x 16 init scales)
    table = text.split("\nEvery configuration\n")[1].split("\nConfig\n")[0]
    rows = [line.split("\t") for line in table.splitlines() if "\t" in line]
    assert len(rows) == 33 and rows[0][:2] == ["model", "norm"] and {len(row) for row in rows} == {len(rows[0])}
