"""A process per core: worker processes, each pinned to one CPU core, that train what a sweep hands them
(`normbench run --processes N`; `normbench.core.sweep.run_sweep` splits the cells into units).

Why processes: on the 2-core machines measured, a CNN cell at batch 128 trained a seed 5% faster on two cores than
on one in one sitting and about 1.6 times as fast in another (the machine's two speeds), where a second process on
the other core trains a second seed in the same time (docs/performance.md, "A process per core"). Threads of one
process do not: pinned one to each core, two epochs side by side took longer than one after the other on both.

A worker is started with `spawn`, pins itself before JAX creates its backend (so XLA sizes its thread pool to
the one core), ignores Ctrl-C (the parent asks it to stop through `stopping`, at an epoch's end) and then runs
jobs, `fn(worker, *args)`, one at a time. What a job tells as it goes (`Worker.tell`) reaches the parent's
`on_event` on a thread of its own, in the order each worker told it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field

from normbench.errors import MachineError


def cores() -> list[int | None]:
    """The CPU cores this process may run on, one worker pinned to each; [None] (unpinned) where the system
    cannot pin (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return [None]
    return sorted(os.sched_getaffinity(0))


def importable_name(obj) -> tuple[str, str] | None:
    """A module and an attribute of it that give `obj` itself to a worker process that imports them, or None
    where none does. A worker starts afresh and imports the modules that a job names, but not this process's
    `__main__` (a notebook, or the script being run): an object made there, or made in a function and kept in
    no module's global, cannot reach it by name."""
    for module_name, module in list(sys.modules.items()):
        if module_name in ("__main__", "__mp_main__"):
            continue
        for attribute, value in list(getattr(module, "__dict__", {}).items()):
            if value is obj:
                return module_name, attribute
    return None


class Workers:
    """`count` worker processes, the k-th pinned to the k-th of `cores()` (round robin past the last). `shared`
    (e.g. the dataset) is sent to each once, at its start; `jax_settings` are applied in each before any job,
    so that a worker computes as this process does (its precision, its optimizations)."""

    def __init__(self, count: int, shared, jax_settings: dict, on_event: Callable[..., None]):
        context = multiprocessing.get_context("spawn")
        self.events, self.stopping = context.Queue(), context.Event()
        self.free: queue.Queue[_Process] = queue.Queue()
        pinned, setup = cores(), (shared, jax_settings, self.events, self.stopping)
        with _main_unseen():
            self.processes = [_Process(context, pinned[k % len(pinned)], setup) for k in range(count)]
        for process in self.processes:
            self.free.put(process)
        self.relay = threading.Thread(target=self._relay, args=(on_event,), name="worker-events", daemon=True)
        self.relay.start()

    def run(self, fn: Callable, *args):
        """`fn(worker, *args)` in the next free worker; its return value or its exception. `fn` and everything
        passed must pickle."""
        process = self.free.get()
        try:
            return process.run(fn, args)
        finally:
            self.free.put(process)

    def stop(self) -> None:
        """Ask every job to stop at its next epoch's end (`Worker.asked`)."""
        self.stopping.set()

    def close(self, abort: bool = False) -> None:
        """End the workers: each after its job, or with `abort`, at once. Then the events they told are relayed."""
        for process in self.processes:
            process.close(abort)
        self.events.put(None)
        self.relay.join()

    def _relay(self, on_event) -> None:
        while (event := self.events.get()) is not None:
            on_event(*event)


@contextlib.contextmanager
def _main_unseen():
    """Workers start without running this process's `__main__`. Spawn runs a script's top level again in each
    child (as `__mp_main__`), so that what the script defined can be unpickled there; a worker needs none of it
    (its jobs are normbench's functions, and a user's norm comes by its module: `importable_name`), and a script
    that calls `normbench.run` outside `if __name__ == "__main__":` ran its study again in every worker, which then
    failed and left this process waiting for it. Spawn reads `__main__` only while a child starts."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Process:
    def __init__(self, context, core: int | None, setup: tuple):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, core, *setup), name=f"normbench-worker-{core}",
                                       daemon=True)  # fmt: skip
        self.process.start()
        child.close()

    def run(self, fn: Callable, args: tuple):
        try:
            self.connection.send((fn, args))
            succeeded, value = self.connection.recv()
        except (EOFError, OSError) as e:
            self.process.join(timeout=10)  # its pipe closes a moment before it can be reaped
            code = self.process.exitcode
            raise MachineError(f"a worker process ended while training (exit code {code}); "
                               f"out of memory? rerun without --processes to see its error") from e  # fmt: skip
        if not succeeded:
            raise value
        return value

    def close(self, abort: bool) -> None:
        if abort:
            self.process.terminate()
        else:
            try:
                self.connection.send(None)
            except OSError:
                self.process.terminate()
        self.process.join()
        self.connection.close()


@dataclass
class Worker:
    """What a worker process holds for every job: the parent's `shared`, and `kept`, which a job may fill for the
    jobs after it (e.g. the data on the device)."""

    shared: object
    events: object
    stopping: object
    kept: dict = field(default_factory=dict)

    def tell(self, *event) -> None:
        """Send `event` (it must pickle) to the parent's `on_event`."""
        self.events.put(event)

    @property
    def asked(self) -> bool:
        """Whether the parent asked the jobs to stop: a worker is a `normbench.runtime.stopping.StopRequest`."""
        return self.stopping.is_set()


def _serve(connection, core: int | None, shared, jax_settings: dict, events, stopping) -> None:
    try:
        worker, failure = _start(core, shared, jax_settings, events, stopping), None
    except Exception as e:  # noqa: BLE001 -- said to the parent as each job's error, where it is shown
        worker, failure = None, _picklable(e)
    while (job := _next(connection)) is not None:
        fn, args = job
        try:
            if failure is not None:
                raise failure
            reply = (True, fn(worker, *args))
        except BaseException as e:  # noqa: BLE001 -- every failure, Stopped included, goes back to the parent
            reply = (False, _picklable(e))
        connection.send(reply)


def _next(connection):
    """The next job, or None at the end: asked for, or the parent gone (killed, its pipe closed)."""
    try:
        return connection.recv()
    except EOFError:
        return None


def _start(core: int | None, shared, jax_settings: dict, events, stopping) -> Worker:
    if core is not None:
        os.sched_setaffinity(0, {core})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import jax

    for key, value in jax_settings.items():
        if jax.config.values.get(key) != value:
            jax.config.update(key, value)
    return Worker(shared, events, stopping)


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 -- an exception that does not survive pickling goes back as its text
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def jax_settings() -> dict:
    """This process's JAX settings that a worker can take: the plain values (x64, optimizations, precision)."""
    import jax

    return {key: value for key, value in jax.config.values.items()
            if isinstance(value, str | int | float | bool | None)}  # fmt: skip
