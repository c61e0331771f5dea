"""The committed studies under results/ are what today's code draws from their own tables: a change to a figure's
or a summary's drawing that leaves a committed one behind fails here until `normbench plot results/<study>` has
redrawn it (no training: the figures and summary.md come from metrics.csv and config.json alone)."""

import shutil
from pathlib import Path

import matplotlib
import pytest

from normbench.cli import main

RESULTS = Path(__file__).resolve().parent.parent / "results"
STUDIES = sorted(p.parent.name for p in RESULTS.glob("*/metrics.csv") if (p.parent / "summary.md").exists())
# The committed figures' matplotlib: another version draws other bytes (its fonts' rasterizing), for reasons of its
# own, so under it only the summaries are compared.
DRAWN_WITH = "3.11.2"


def test_every_study_is_checked():
    assert {"init_scale", "small_batch", "images_per_statistic", "sync_bn", "transformer_norms"} <= set(STUDIES)


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_a_committed_studys_figures_and_summary_are_what_plot_redraws(study, tmp_path):
    committed = RESULTS / study
    redrawn = tmp_path / study
    shutil.copytree(committed, redrawn)
    kinds = (".png", ".md") if matplotlib.__version__ == DRAWN_WITH else (".md",)
    candidates = [p.name for p in committed.iterdir() if p.suffix in kinds]
    for name in candidates:  # what plot draws again; the others (an experiment's table) stay gone
        (redrawn / name).unlink()
    assert main(["plot", str(redrawn)]) == 0
    drawn = [name for name in candidates if (redrawn / name).exists()]
    assert "summary.md" in drawn
    stale = [name for name in drawn if (redrawn / name).read_bytes() != (committed / name).read_bytes()]
    assert not stale, f"results/{study}: {stale} differ from what plot draws; run normbench plot results/{study}"
