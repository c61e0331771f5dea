"""The docs hold together: every relative link and image in README.md, CHANGELOG.md and docs/*.md resolves to a file
of the repository, and every `#anchor` to a heading of its page (GitHub's slugs); the README stays a short page."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220  # issue 28: a user's page, with findings, speed and running details in docs/

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.M)


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where `[x](y)` and `# x` are not markdown."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on `page`, a repeated one numbered as GitHub numbers it (`-1`, `-2`, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """`page`'s relative links and images whose file is not in `root`, or whose anchor is no heading there."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: leave the repository
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        if not resolved.exists() or not resolved.is_relative_to(root):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("Running a sweep", "running-a-sweep"),
        (
            "The small-batch question: images per BatchNorm statistic",
            "the-small-batch-question-images-per-batchnorm-statistic",
        ),
        ("`config.json`", "configjson"),
        ("images_per_statistic", "images_per_statistic"),
        ("`data`: `DataConfig`", "data-dataconfig"),
        ("4. Sweep it", "4-sweep-it"),
    ],
)
def test_slugs_are_githubs(heading, anchor):
    assert slug(heading) == anchor


def test_a_missing_file_or_heading_is_reported(tmp_path):
    root = tmp_path.resolve()
    page = root / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](#nowhere) ![img](missing.png) [web](https://example.org)\n")
    assert broken_links(page, root=root) == [
        "#nowhere: no heading #nowhere in page.md",
        "missing.png: no such file in the repository",
    ]


def test_the_readme_is_at_most_220_lines():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES
