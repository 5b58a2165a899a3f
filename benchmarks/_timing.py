"""Timing helpers shared by the benchmarks: medians, and pairs measured alternately.

A 2-core machine shared with other work drifts; timing the baseline and
envcrypt in turns, round after round, lets both see the same load, so their
ratio means something even when the absolute times do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(plain: Callable[[], object], ours: Callable[[], object], repeat: int, *,
           warm: bool = True) -> tuple[float, float]:
    """Median times of ``plain`` and ``ours``, measured alternately (after one warm-up call of each:
    imports, connections, caches, unless ``warm=False``)."""
    if warm:
        plain()
        ours()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((plain, times[0]), (ours, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])
