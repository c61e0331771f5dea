"""Named points where a run can be killed on purpose, so the kill-and-resume tests stop a real run exactly
mid-cell or mid-write rather than wherever a timer happens to land.

`NORMBENCH_KILL_AT=<point>` SIGKILLs the process the first time it reaches `<point>`, and `<point>#<n>` the n-th
time. Points: `write:<file name>` (an atomic write's data is on disk under its temporary name, not yet renamed)
and `checkpoint` (a cell's state has just been saved). Unset, each point costs one dictionary lookup.
"""

from __future__ import annotations

import collections
import os
import signal

_reached: collections.Counter = collections.Counter()


def reached(point: str) -> None:
    target = os.environ.get("NORMBENCH_KILL_AT")
    if not target:
        return
    name, _, count = target.partition("#")
    if name == point:
        _reached[point] += 1
        if _reached[point] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
