"""Compiling overlapped with training: cells compile in order on one thread while `workers` threads train the
compiled ones, so a cell waits only for the compile time that the training before it did not cover."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def pipeline(count: int, compile: Callable, train: Callable, workers: int, ahead: int = 2) -> list:
    """`train(i, compile(i), waited_s)` for i in 0..count-1, returned in order. One thread calls `compile(i)`
    in order, at most `ahead` programs past the last one a trainer took (each is held in memory until trained);
    `workers` threads train them, taking cells in order. On a failure or Ctrl-C, no further cell starts, and the
    ones under way finish before the error is raised."""
    with ThreadPoolExecutor(1, "compile") as compiler, ThreadPoolExecutor(workers, "train") as trainers:
        compiled = []
        handing_on = threading.Lock()

        def compile_next():
            with handing_on:
                if len(compiled) < count:
                    compiled.append(compiler.submit(compile, len(compiled)))

        for _ in range(max(ahead, workers)):
            compile_next()

        def compile_then_train(i):
            started = time.perf_counter()
            program = compiled[i].result()
            waited = time.perf_counter() - started
            compile_next()
            return train(i, program, waited)

        trained = [trainers.submit(compile_then_train, i) for i in range(count)]
        try:
            concurrent.futures.wait(trained, return_when=concurrent.futures.FIRST_EXCEPTION)
            return [future.result() for future in trained]
        except BaseException:
            for future in trained + compiled:
                future.cancel()
            raise
