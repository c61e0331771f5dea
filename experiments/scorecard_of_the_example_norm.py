"""The scorecard of docs/adding_a_norm.md's example norm (ScaleNorm) beside the committed built-ins, without editing
normbench: the page's section 1 is loaded as a user's module and registered, the committed scorecard is copied
into OUT, and the battery trains the new norm alone (every built-in is found finished there).

python experiments/scorecard_of_the_example_norm.py [--out runs/scorecard_scale] [--docs]

`--docs` then copies its figure and scorecard.md to docs/images/scorecard_scale.png and docs/scorecard_scale.md,
which the page shows, and the norm's runs (each test's metrics.csv and config.json, its cost rounds) to
docs/data/scorecard_scale/, the data the page's row is drawn from. The committed results/scorecard/ is only read.
"""

import argparse
import re
import shutil
import sys
import types
from pathlib import Path

import normbench

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "adding_a_norm.md"
COMMITTED = ROOT / "results" / "scorecard"
FIRST_LINE = "# normbench/norms/scale.py: new file"


def example_source() -> str:
    """The page's section 1: the code block that creates normbench/norms/scale.py."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    return next(block for block in blocks if block.startswith(FIRST_LINE))


def example_norm() -> types.ModuleType:
    """`example_source()` as a module of a user's own, outside normbench."""
    module = types.ModuleType("my_norms")
    exec(compile(example_source(), str(PAGE), "exec"), module.__dict__)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/scorecard_scale", help="where the battery writes (default: %(default)s)")
    parser.add_argument("--docs", action="store_true", help="copy its figure, scorecard.md and runs into docs/")
    args = parser.parse_args()
    out = Path(args.out)
    if not (COMMITTED / "scorecard.md").is_file():
        sys.exit(f"error: {COMMITTED} holds no scorecard: run `normbench scorecard --out {COMMITTED}` first")
    if not out.exists():
        shutil.copytree(COMMITTED, out)
    spec = example_norm().SPEC
    normbench.register_norm(spec)
    normbench.scorecard([spec.name], out=out)
    if args.docs:
        shutil.copyfile(out / "scorecard.png", ROOT / "docs" / "images" / f"scorecard_{spec.name}.png")
        shutil.copyfile(out / "scorecard.md", ROOT / "docs" / f"scorecard_{spec.name}.md")
        data = ROOT / "docs" / "data" / f"scorecard_{spec.name}"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(out / "runs" / spec.name, data)
    print(f"scorecard in {out}/scorecard.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
