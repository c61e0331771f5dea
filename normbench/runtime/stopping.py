"""Stopping a sweep at an epoch boundary. The first Ctrl-C (SIGINT) or SIGTERM during a sweep asks every cell in
training to stop as its epoch ends and no other cell to start; it is said at once (`MESSAGE`). What is finished is
kept: each finished cell's rows and, with `train.checkpoint_every`, each stopped cell's state at its last epoch
(`normbench.runtime.phases.run_phases`), so that rerunning the same command resumes and computes the same bytes.
A second signal interrupts at once, as a KeyboardInterrupt does.

A cell trained as one program over several devices (`normbench.core.sweep.lower_grid`) has no epoch boundary the
host can stop at: it stops when that program ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Callable

MESSAGE = "stopping after this epoch; Ctrl-C again to abort"


class Stopped(KeyboardInterrupt):
    """A sweep stopped on request at an epoch boundary: whatever handles a Ctrl-C handles it too (the CLI exits
    130, telling how to resume)."""


class StopRequest:
    """Whether a sweep has been asked to stop (`ask`); asked from a signal handler on the main thread, so asking
    takes no lock that a trainer may hold for longer than a moment."""

    def __init__(self):
        self._asked = concurrent.futures.Future()  # a future, so that a wait can end on it (`wait_for`)

    def ask(self) -> None:
        if not self._asked.done():
            self._asked.set_result(None)

    @property
    def asked(self) -> bool:
        return self._asked.done()

    def when_asked(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once a stop is asked, from whichever thread asks (the signal handler's)."""
        self._asked.add_done_callback(lambda _: callback())

    def wait_for(self, future: concurrent.futures.Future):
        """`future`'s result, or `Stopped` as soon as a stop is asked: a cell still compiling never starts. A
        cancelled `future` raises CancelledError at once. Done callbacks, not `concurrent.futures.wait`: that does
        not wake for a future cancelled before it ran (a cell queued to compile when another failed) until an
        executor takes it up, which a shut-down executor never does, and the waiting thread then kept the process
        from exiting."""
        settled = threading.Event()
        future.add_done_callback(lambda _: settled.set())
        self._asked.add_done_callback(lambda _: settled.set())
        settled.wait()
        if self.asked:
            raise Stopped
        return future.result()


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest, announce: Callable[[str], None]):
    """For the duration, the first SIGINT or SIGTERM asks `stop` and `announce`s `MESSAGE`; the next one raises
    KeyboardInterrupt. Only a signal that would have raised KeyboardInterrupt anyway is taken (Python's SIGINT
    handler; SIGTERM where the CLI makes it one): an ignored one stays ignored, a caller's own handler stays theirs.
    Signals reach the main thread alone, so from another thread this changes nothing."""
    taken = ()
    if threading.current_thread() is threading.main_thread():
        taken = tuple(s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is signal.default_int_handler)

    def first(signum, frame):
        for s in taken:
            signal.signal(s, signal.default_int_handler)
        stop.ask()
        announce(MESSAGE)

    for s in taken:
        signal.signal(s, first)
    try:
        yield
    finally:
        for s in taken:
            signal.signal(s, signal.default_int_handler)
