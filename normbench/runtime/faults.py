"""Named points where a run can be killed on purpose, so the kill-and-resume tests stop a real run exactly
mid-cell or mid-write rather than wherever a timer happens to land.

`NORMBENCH_KILL_AT=<point>` SIGKILLs the process the first time it reaches `<point>`, and `<point>#<n>` the n-th
time. Points: `write:<file name>` (an atomic write's data is on disk under its temporary name, not yet renamed),
`checkpoint` (a cell's state has just been saved), and the steps of swapping in a results directory's replacement
(`normbench.results.swap`): `swap:built` (complete beside it), `swap:exchanged` (swapped, the old one not yet
removed), or where the exchange is not available `swap:moved-old` (between the two renames) and `swap:moved-new`.
`NORMBENCH_POINTS=<file>` appends each point reached to `<file>`, one a line: the list of places to kill a run at.
Unset, each point costs two dictionary lookups.
"""

from __future__ import annotations

import collections
import os
import signal

_reached: collections.Counter = collections.Counter()


def reached(point: str) -> None:
    log = os.environ.get("NORMBENCH_POINTS")
    if log:
        with open(log, "a") as f:
            f.write(point + "\n")
    target = os.environ.get("NORMBENCH_KILL_AT")
    if not target:
        return
    name, _, count = target.partition("#")
    if name == point:
        _reached[point] += 1
        if _reached[point] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
