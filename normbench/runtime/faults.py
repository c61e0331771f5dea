"""Named points where a run can be killed on purpose, so the kill-and-resume tests stop a real run exactly
mid-cell or mid-write rather than wherever a timer happens to land.

`NORMBENCH_KILL_AT=<point>` SIGKILLs the process the first time it reaches `<point>`, and `<point>#<n>` the n-th
time. Points: `write:<file name>` (an atomic write's data is on disk under its temporary name, not yet renamed),
`checkpoint` (a cell's state has just been saved), and the steps of swapping in a results directory's replacement
(`normbench.results.swap`): `swap:built` (complete beside it), `swap:exchanged` (swapped, the old one not yet
removed), or where the exchange is not available `swap:moved-old` (between the two renames) and `swap:moved-new`.
`kept:<i>` is the i-th cell of the sweep, its rows just kept for a resume.
`NORMBENCH_HOLD_AT=<point>[#<n>]` instead holds the thread that reaches it for `NORMBENCH_HOLD_S` seconds (default
10), so that a test's signal lands while the run is certainly mid-sweep, however slow the machine.
`NORMBENCH_POINTS=<file>` appends each point reached to `<file>`, one a line: the list of places to kill a run at.
Unset, each point costs three dictionary lookups.
"""

from __future__ import annotations

import collections
import os
import signal
import time

_reached: collections.Counter = collections.Counter()


def reached(point: str) -> None:
    log = os.environ.get("NORMBENCH_POINTS")
    if log:
        with open(log, "a") as f:
            f.write(point + "\n")
    if _nth_time(os.environ.get("NORMBENCH_KILL_AT"), point, "kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if _nth_time(os.environ.get("NORMBENCH_HOLD_AT"), point, "hold"):
        time.sleep(float(os.environ.get("NORMBENCH_HOLD_S", "10")))


def _nth_time(target: str | None, point: str, action: str) -> bool:
    """Whether `point` is reached for the time that `target` (`<point>[#<n>]`) names."""
    if not target:
        return False
    name, _, count = target.partition("#")
    if name != point:
        return False
    _reached[action, point] += 1
    return _reached[action, point] == int(count or 1)
