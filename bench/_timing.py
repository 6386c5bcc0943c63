"""Shared by the benchmark scripts: best-of-N timing (this machine's speed varies run to run)."""

import time


def best_of(fn, repeats: int = 3):
    """``fn()``'s value and the shortest of ``repeats`` wall-clock times, in seconds."""
    best, value = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return value, best
