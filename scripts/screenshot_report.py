"""Screenshot a page in headless Chromium, as a reader's browser would show it: the check that a report renders.

    python scripts/screenshot_report.py results/init_scale/report.html report.png [--width 1400]

Needs a Chromium or Chrome binary (`apt-get install chromium` on Debian/Ubuntu; found as `chromium`,
`chromium-browser`, `google-chrome` or `$CHROMIUM`). Chromium's `--screenshot` captures a fixed window, so the
window is made tall and the blank rows below the page are cropped off. `tests/test_report.py` reads the text
the same browser shows of a report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), *BROWSERS]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


def screenshot(page: Path, png: Path, width: int = 1400, max_height: int = 16000, browser: str | None = None) -> Path:
    """Render `page` in headless Chromium and save the page (up to `max_height` pixels) as `png`."""
    from PIL import Image

    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium, or set $CHROMIUM")
    with tempfile.TemporaryDirectory() as profile:  # a throwaway profile: no state leaks between runs
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={width},{max_height}", f"--screenshot={Path(png).resolve()}",
             Path(page).resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    image = Image.open(png).convert("RGB")
    pixels = np.asarray(image)
    content = np.flatnonzero((pixels < 250).any(axis=(1, 2)))
    bottom = int(content[-1]) + 40 if len(content) else pixels.shape[0]
    image.crop((0, 0, width, min(bottom, pixels.shape[0]))).save(png)
    return Path(png)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    print(screenshot(args.page, args.png, args.width))


if __name__ == "__main__":
    main()
