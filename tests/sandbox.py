"""normbench commands run in a child process under kernel-enforced limits, so that an input that would take the
machine's memory or time fails its test with the command named, instead of killing the pytest worker (a fuzz
example with train.epochs=369346492 once allocated 25 GiB and was OOM-killed with its worker).

- memory: RLIMIT_AS, the address space the child may map; past it an allocation fails (a MemoryError, or XLA
  aborting the child);
- time: RLIMIT_CPU, the CPU seconds each command may add to the child's; past them the kernel ends the child
  (SIGXCPU). CPU time, not wall time: the suite shares its cores with other work, which slows a command's clock
  (a second of CPU took over a minute at nice 19 beside a study) but not its CPU seconds. A wall-clock limit,
  `wall_seconds`, catches a command that waits forever, which takes no CPU.

One child serves every command of a `Sandbox` (its imports paid once); a child that a limit ended, or whose
command raised, is replaced for the next command. `worst` holds the most CPU seconds, wall seconds and resident
memory any command took.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import resource
import signal
import time
import traceback

MIB = 2**20


class Sandbox:
    def __init__(self, memory_bytes: int, cpu_seconds: float, wall_seconds: float = 1800):
        self.memory_bytes, self.cpu_seconds, self.wall_seconds = memory_bytes, cpu_seconds, wall_seconds
        self.worst = {"cpu_s": 0.0, "wall_s": 0.0, "rss_bytes": 0, "commands": 0}
        self._child = self._connection = None

    def cli(self, args: list[str]) -> tuple[int, str]:
        """`normbench ARGS` in the child: (its exit status, its stderr); an AssertionError naming ARGS where it
        raised, or a limit ended it."""
        child, connection = self._ready()
        connection.send(args)
        if not connection.poll(self.wall_seconds):
            self.close()
            raise AssertionError(f"normbench {args!r} ran for over {self.wall_seconds:g} s of wall time")
        try:
            outcome = connection.recv()
        except EOFError:
            child.join()
            self.close()
            raise AssertionError(f"normbench {args!r} ended its process: {_death(child.exitcode, self)}") from None
        if "raised" in outcome:  # a MemoryError can leave the child half-built: the next command gets a new one
            self.close()
            raise AssertionError(f"normbench {args!r} raised:\n{outcome['raised']}")
        self.worst["commands"] += 1
        for key in ("cpu_s", "wall_s", "rss_bytes"):
            self.worst[key] = max(self.worst[key], outcome[key])
        return outcome["code"], outcome["err"]

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.join()
        self._child = self._connection = None

    def summary(self) -> str:
        w = self.worst
        return (f"{w['commands']} commands under {self.memory_bytes / MIB:,.0f} MiB and {self.cpu_seconds:g} CPU s "
                f"each: the worst took {w['cpu_s']:.1f} CPU s, {w['wall_s']:.1f} s of wall time, and the child's "
                f"resident memory peaked at {w['rss_bytes'] / MIB:,.0f} MiB")  # fmt: skip

    def _ready(self):
        if self._child is None or not self._child.is_alive():
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: forking JAX's threads can deadlock
            self._connection, theirs = context.Pipe()
            self._child = context.Process(target=_serve, args=(theirs, self.memory_bytes, self.cpu_seconds))
            self._child.start()
            theirs.close()
        return self._child, self._connection


def _death(exitcode: int, sandbox: Sandbox) -> str:
    if exitcode == -signal.SIGXCPU:
        return f"it used over {sandbox.cpu_seconds:g} s of CPU"
    if exitcode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGKILL):
        return f"{signal.Signals(-exitcode).name}, likely an allocation past {sandbox.memory_bytes / MIB:,.0f} MiB"
    return f"exit status {exitcode}"


def _serve(connection, memory_bytes: int, cpu_seconds: float) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a child ended at its CPU limit leaves no core file behind
    from normbench.cli import main

    while True:
        try:
            args = connection.recv()
        except EOFError:  # the sandbox closed
            return
        used = _cpu_seconds()
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used + cpu_seconds), hard))
        start = time.perf_counter()
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                try:
                    code = main(args)
                except SystemExit as e:  # argparse's own refusals
                    code = e.code
        except BaseException:  # noqa: BLE001 - a traceback is the finding: the parent names the command
            connection.send({"raised": traceback.format_exc()})
            continue
        connection.send({
            "code": code, "err": err.getvalue(), "cpu_s": _cpu_seconds() - used, "wall_s": time.perf_counter() - start,
            "rss_bytes": _peak_resident_bytes(),
        })  # fmt: skip


def _peak_resident_bytes() -> int:
    """The child's peak resident memory since it started: VmHWM, which begins anew at exec. getrusage's ru_maxrss
    survives exec, so a child spawned from a pytest worker that had grown to 2.4 GB reported that from its start."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
