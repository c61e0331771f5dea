"""What `normbench list configs` says of each study config: the first sentence of its docstring, whole."""

import ast
from pathlib import Path

import pytest

from normbench.catalog import configs_table, first_sentence

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "doc, sentence",
    [
        ("One line.\n\nMore.", "One line."),
        ("Does it work?\nThe rest says how.", "Does it work?"),
        ("A sentence wrapped\nover two lines. Then another.", "A sentence wrapped over two lines."),
        ("The book's (Deep Learning, ch. 6): does BN help? Yes.", "The book's (Deep Learning, ch. 6): does BN help?"),
        ("Version 1.5 of the study. More.", "Version 1.5 of the study."),
        ("No full stop in the first paragraph\n\nA second.", "No full stop in the first paragraph"),
    ],
)
def test_the_first_sentence_ends_at_its_full_stop_not_at_a_line_or_an_abbreviation(doc, sentence):
    assert first_sentence(doc) == sentence


def test_list_configs_shows_each_configs_first_sentence_whole(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    rows, name = {}, None
    for line in configs_table().splitlines()[2:]:
        if line.startswith(" "):  # the summary wrapped onto another line
            rows[name].append(line)
        else:
            name, _, summary = line.partition(" ")
            rows[name] = [summary]
    for path in sorted(CONFIGS.glob("*.py")):
        listed = " ".join(" ".join(rows[str(Path("configs") / path.name)]).split())
        doc = " ".join(ast.get_docstring(ast.parse(path.read_text())).split("\n\n")[0].split())
        assert doc.startswith(listed) and listed[-1] in ".?!", (path.name, listed)
