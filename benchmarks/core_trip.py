"""A value's round trip between this process's first two CPUs, in nanoseconds, each side pinned to one CPU.

    python benchmarks/core_trip.py [--every SECONDS --for SECONDS]

prints the median of 3 bursts of 20,000 round trips, or with `--every`, one such median a line over time.

On the 2-core virtual machines (AMD EPYC) of issue 31 this round trip takes one of two values, switching every few
seconds to tens of seconds: 480-770 ns or 850-1,860 ns from this Python loop, which adds the interpreter's time (a C
loop of the same handshake: about 200 or 600 ns). Work on both cores runs at two speeds with it: a GroupNorm cell's
evaluation took 0.43-0.44 s a call at the first and 0.64-0.74 s at the second (docs/performance.md). Why the round
trip changes was not measured; a hypothesis: the host runs the two CPUs on cores that share a cache at some times
and not at others. `normbench bench` records it just before each row of its alternated cases; a row that lasts
longer than a state can hold both.

Standard library only, and it forks: a process running JAX's threads must not fork, so the bench starts this
file in a process of its own.
"""

import argparse
import mmap
import os
import signal
import statistics
import sys
import time

ROUNDS = 20_000
BURSTS = 3
# A side left waiting (the other killed, or starved of its CPU by another job) ends here instead of spinning on.
LIMIT_S = 30


def round_trip_ns(rounds: int = ROUNDS, bursts: int = BURSTS) -> float | None:
    """The median over `bursts` of the mean round trip of a value between the first two CPUs this process may
    use, each side pinned to one; None where it may use only one."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    flag = memoryview(mmap.mmap(-1, mmap.PAGESIZE)).cast("q")  # shared with the child: a shared anonymous map
    child = os.fork()
    if child == 0:
        signal.alarm(LIMIT_S)
        os.sched_setaffinity(0, {cpus[1]})
        for i in range(rounds * bursts):
            while flag[0] != 2 * i + 1:
                pass
            flag[0] = 2 * i + 2
        os._exit(0)
    os.sched_setaffinity(0, {cpus[0]})
    means = []
    for burst in range(bursts):
        start = time.perf_counter()
        for i in range(burst * rounds, (burst + 1) * rounds):
            flag[0] = 2 * i + 1
            while flag[0] != 2 * i + 2:
                pass
        means.append((time.perf_counter() - start) / rounds * 1e9)
    os.waitpid(child, 0)
    os.sched_setaffinity(0, cpus)
    return statistics.median(means)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, help="seconds between measurements (default: measure once)")
    parser.add_argument("--for", dest="duration", type=float, default=60.0, help="seconds to go on with --every")
    args = parser.parse_args(argv)
    signal.alarm(LIMIT_S if args.every is None else int(args.duration) + LIMIT_S)
    if args.every is None:
        print(_rounded(round_trip_ns()))
        return
    start = time.perf_counter()
    while time.perf_counter() - start < args.duration:
        print(f"{time.perf_counter() - start:8.1f} s  {_rounded(round_trip_ns())}", flush=True)
        time.sleep(args.every)


def _rounded(ns: float | None):
    return None if ns is None else round(ns)


if __name__ == "__main__":
    sys.exit(main())
