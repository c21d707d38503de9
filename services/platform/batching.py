"""Batches that adapt their size to the work: each batch takes about `target_s`, so progress (which checks a job's
cancel flag) is reported often enough that a cancel is honoured within ~2 s, even for slow methods (occlusion, LTX
finetuning) on a CPU, while fast methods (GradCAM) still run in full batches."""
from __future__ import annotations

import time


def adaptive_batches(n: int, max_size: int, target_s: float = 0.4, first: int = 2):
    """Yield (start, stop) slices covering range(n); the size after each batch is rescaled to take ~target_s."""
    size = max(1, min(int(max_size), int(first)))
    start = 0
    while start < n:
        stop = min(n, start + size)
        t0 = time.monotonic()
        yield start, stop
        dt = time.monotonic() - t0
        done = stop - start
        rate = done / max(dt, 1e-6)
        size = max(1, min(int(max_size), int(rate * target_s)))
        start = stop
