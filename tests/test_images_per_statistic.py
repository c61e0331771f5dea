"""configs/images_per_statistic.py, shrunk to seconds: its protocol, its claims and its figure take any registered
norm, a user's own included, with no change to normbench."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

import normbench
from normbench.config import load_config
from normbench.core.grid import cells, plan
from normbench.norms import NORMS
from normbench.results.claims import parse_claim

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "images_per_statistic.py"


def test_every_claim_parses_and_each_g_below_the_batch_is_contrasted_in_both_arms():
    config = load_config(CONFIG)
    claims = [parse_claim(text) for text in config.report.claims]
    top = str(max(config.sweep.batch_sizes))
    drops = {(dict(c.where)["model"], dict(c.terms[0].pairs)["ghost_size"]) for c in claims
             if dict(c.where).get("norm") == "batch" and dict(c.terms[1].pairs) == {"ghost_size": top}}  # fmt: skip
    sizes = config.sweep.batch_sizes
    assert drops == {(m, str(g)) for m in config.sweep.models for g in sizes if g != max(sizes)}


def test_batch_dependent_norms_get_every_size_and_the_others_one():
    config = load_config(CONFIG)
    sizes = {cell.norm: plan(config, cell).stat_sizes for cell in cells(config)}
    assert sizes["batch"] == sizes["batch_renorm"] == config.sweep.batch_sizes
    assert sizes["layer"] == sizes["group"] == (max(config.sweep.batch_sizes),)


@pytest.fixture
def users_norms():
    added = [
        normbench.register_norm(dataclasses.replace(NORMS["batch"], name="users_bn")),
        normbench.register_norm(dataclasses.replace(NORMS["rms"], name="users_rms")),
    ]
    yield [spec.name for spec in added]
    for spec in added:
        del NORMS[spec.name]


@pytest.mark.slow
def test_a_users_norms_run_through_the_study_unchanged(users_norms, tmp_path):
    out = normbench.run(
        CONFIG,
        tmp_path / "ips",
        **{
            "data.n_train": 64, "data.n_val": 32, "data.n_test": 32, "train.epochs": 1, "train.min_steps": 8,
            "train.test_every": 1, "train.diagnostics_at": (1,), "train.precise_bn_examples": 16,
            "sweep.batch_sizes": (1, 2, 8), "sweep.seeds": (0, 1), "sweep.learning_rates": (0.1,),
            "sweep.norms": ("batch", *users_norms), "report.tune_extensions": 0,
        },
    )  # fmt: skip
    df = normbench.load(out)
    final = df[df.epoch == df.epoch.max()]
    sizes = final.groupby(["model", "norm"]).ghost_size.unique()
    assert all(sorted(sizes[(m, "users_bn")]) == [1, 2, 8] for m in ("mlp", "cnn"))
    assert all(list(sizes[(m, "users_rms")]) == [8] for m in ("mlp", "cnn"))
    # the user's BN copy computes what BN does, bit for bit, and its eval modes are measured like BN's
    ours, theirs = (final[final.norm == n].sort_values(["model", "ghost_size", "seed"]) for n in ("batch", "users_bn"))
    np.testing.assert_array_equal(ours.test_acc.to_numpy(), theirs.test_acc.to_numpy())
    assert (
        theirs.test_acc_example_weighted.notna().all()
        and final[final.norm == "users_rms"].test_acc_precise.isna().all()
    )
    for figure in ("images_per_statistic", "bn_eval_modes", "statistic_noise"):
        assert (out / f"{figure}.png").stat().st_size > 10_000


def _claim_cells(summary: str) -> dict[str, str]:
    """Each claim of a summary.md as docs/studies.md's tables write it: difference [interval], p: verdict."""
    line = re.compile(r"^- `(?P<claim>[^`]+)`: (?P<d>\S+) points, 95% CI \[(?P<lo>[^,]+), (?P<hi>[^\]]+)\] over \d+ "
                      r"seeds, Holm-adjusted p (?P<p>[^:]+): \*\*(?P<verdict>[^*]+)\*\*", re.M)  # fmt: skip
    cells = {}
    for m in line.finditer(summary):
        verdict = m["verdict"]
        if verdict.startswith("significant"):
            verdict = "**significant**"
        elif "after Holm" in verdict:
            verdict = "not significant after Holm (the interval excludes 0)"
        else:
            verdict = "not significant"
        cells[m["claim"]] = f"{m['d']} [{m['lo']}, {m['hi']}], p {m['p']}: {verdict}"
    return cells


def test_docs_quote_every_claim_as_the_committed_summary_prints_it():
    """docs/studies.md's tables of this study hold each claim of results/images_per_statistic/summary.md, every one
    of them, as printed there: a rerun that changes a number fails here until the docs follow."""
    root = CONFIG.parents[1]
    cells = _claim_cells((root / "results" / "images_per_statistic" / "summary.md").read_text())
    assert len(cells) == len(load_config(CONFIG).report.claims)
    section = (root / "docs" / "studies.md").read_text().split("## images_per_statistic")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if re.match(r"\| (MLP|CNN) \| \d+ \|", line)]
    quoted = [cell.strip() for row in rows for cell in row.strip("|").split("|")[2:]]
    assert sorted(quoted) == sorted(cells.values())
