"""Vectorised sliding-window primitives over one stream's time-ordered trades."""

from __future__ import annotations

import numpy as np


def window_starts(time_us: np.ndarray, window_us: int) -> np.ndarray:
    """For each trade j, the first index i with ``time[j] - time[i] <= window_us``.

    `time_us` must be sorted ascending. The window of j is the closed interval
    ``[time[j] - window, time[j]]``; it always contains j itself.
    """
    return np.searchsorted(time_us, time_us - window_us, side="left")


def range_argmin(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of the minimum of ``values[lo[k]:hi[k] + 1]`` for every k (earliest on ties).

    A sparse table: O(n log n) build and O(1) per query, all in numpy.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    levels = [np.arange(n, dtype=np.int64)]
    width = 1
    while width * 2 <= n:
        prev = levels[-1]
        count = n - 2 * width + 1
        a = prev[:count]
        b = prev[width : width + count]
        # Prefer the left (earlier) index unless the right half is strictly lower.
        levels.append(np.where(values[b] < values[a], b, a))
        width *= 2
    length = hi - lo + 1
    level = np.frexp(length.astype(np.float64))[1] - 1  # floor(log2(length)), exact for ints
    left = np.empty(len(lo), dtype=np.int64)
    right = np.empty(len(lo), dtype=np.int64)
    for k in np.unique(level):
        sel = level == k
        table = levels[int(k)]
        left[sel] = table[lo[sel]]
        right[sel] = table[hi[sel] - (1 << int(k)) + 1]
    return np.where(values[right] < values[left], right, left)


def window_sums(values: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``sum(values[lo[j]:j + 1])`` for every j."""
    csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return csum[1:] - csum[lo]
