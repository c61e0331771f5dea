"""The suite's own machinery (`tests/conftest.py`)."""

import os

from conftest import drop_oldest


def test_the_kept_programs_beyond_the_limit_are_the_oldest_and_are_dropped(tmp_path):
    for age, name in enumerate(["newest", "newer", "older", "oldest"]):
        entry = tmp_path / name
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1_000_000 - age, 1_000_000 - age))
    drop_oldest(tmp_path, limit=250)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["newer", "newest"]
    drop_oldest(tmp_path, limit=250)
    assert len(list(tmp_path.iterdir())) == 2
