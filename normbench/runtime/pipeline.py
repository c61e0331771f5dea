"""Compiling overlapped with training: cells compile in order on one thread while `workers` threads train the
compiled ones, so a cell waits only for the compile time that the training before it did not cover."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from normbench.runtime.stopping import Stopped, StopRequest


def pipeline(count: int, compile: Callable, train: Callable, workers: int, ahead: int = 2,
             stop: StopRequest | None = None) -> list:  # fmt: skip
    """`train(i, compile(i), waited_s)` for i in 0..count-1, returned in order. One thread calls `compile(i)`
    in order, at most `ahead` programs past the last one a trainer took (each is held in memory until trained);
    `workers` threads train them, taking cells in order. On a failure or a `stop`, no further cell starts and the
    ones in training finish (asked to stop, they end with their epoch: `normbench.runtime.stopping`) before the
    error is raised; a KeyboardInterrupt raises at once. A compile under way is never waited for: no cell will
    train its program."""
    stop = stop or StopRequest()
    compiler, trainers = ThreadPoolExecutor(1, "compile"), ThreadPoolExecutor(workers, "train")
    compiled = []
    handing_on = threading.Lock()
    training: set[int] = set()  # the cells past compiling; once `closed`, no cell joins them
    closed = False

    def compile_next():
        with handing_on:
            if len(compiled) < count and not closed:
                compiled.append(compiler.submit(compile, len(compiled)))

    def close() -> list[int]:
        """No further cell starts; returns the cells in training."""
        nonlocal closed
        with handing_on:
            closed = True
            return sorted(training)

    def compile_then_train(i):
        try:
            started = time.perf_counter()
            program = stop.wait_for(compiled[i])
            waited = time.perf_counter() - started
            with handing_on:
                if closed:
                    raise concurrent.futures.CancelledError
                training.add(i)
            compile_next()
            return train(i, program, waited)
        except BaseException:
            close()  # at once, not when the main thread wakes: a free trainer would start the next cell
            raise

    trained = []
    try:
        for _ in range(max(ahead, workers)):
            compile_next()
        trained += [trainers.submit(compile_then_train, i) for i in range(count)]
        concurrent.futures.wait(trained, return_when=concurrent.futures.FIRST_EXCEPTION)
        return [future.result() for future in trained]
    except BaseException as error:
        under_way = [trained[i] for i in close()]
        for future in trained + compiled:
            future.cancel()
        if isinstance(error, Stopped) or not isinstance(error, KeyboardInterrupt):
            concurrent.futures.wait(under_way)  # what they finish is kept; a Ctrl-C meanwhile ends the wait
        raise
    finally:
        compiler.shutdown(wait=False, cancel_futures=True)
        trainers.shutdown(wait=False, cancel_futures=True)
