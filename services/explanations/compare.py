"""The detail view's method comparison (docs/architecture.md, Rooms): every method's map of one image, computed in
one background thread of the process that asks and kept for every session, so moving ← / → never waits for it and
a second look at an image is instant. One image and a few methods: short work, not a job."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from services.explanations.explaining import explain_one
from services.models.registry import load_classifier

KEEP = 512  # finished comparisons kept (the oldest is forgotten first): memory stays bounded


class CompareStore:
    """Finished comparisons {key: {method: map or error text}}, the keys being computed, and one worker thread."""

    def __init__(self):
        self.done: dict[tuple, dict[str, np.ndarray | str]] = {}
        self.pending: set[tuple] = set()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exemplar-compare")

    def status(self, key: tuple) -> str:
        with self.lock:
            return "done" if key in self.done else ("pending" if key in self.pending else "none")

    def result(self, key: tuple) -> dict | None:
        with self.lock:
            return self.done.get(key)

    def start(self, key: tuple, fn) -> None:
        """Queue fn() → {method: map} for key unless it is done or queued already."""
        with self.lock:
            if key in self.done or key in self.pending:
                return
            self.pending.add(key)
        self.pool.submit(self._run, key, fn)

    def _run(self, key: tuple, fn) -> None:
        try:
            res = fn()
        except Exception as exc:  # shown in the detail view instead of the maps
            res = {"error": " ".join(str(exc).split()) or type(exc).__name__}
        with self.lock:
            self.done[key] = res
            self.pending.discard(key)
            if len(self.done) > KEEP:
                self.done.pop(next(iter(self.done)))


@lru_cache(maxsize=2)
def _classifier(model_id: int, checkpoint: str):
    """(model, lock): one copy per process and checkpoint; the lock serialises threads explaining with it."""
    model, _ = load_classifier(model_id)
    return model, threading.Lock()


def compute(model_id: int, checkpoint: str, image: np.ndarray, methods: list[str], target: int) -> dict:
    """Every method's map of one image (float32 (H, W) in [0, 1]); a failing method gives its error text."""
    model, lock = _classifier(int(model_id), str(checkpoint))
    out: dict[str, np.ndarray | str] = {}
    for m in methods:
        try:
            with lock:
                e, _ = explain_one(model, image, m, target, model_id=model_id)
            out[m] = e
        except Exception as exc:  # one failing method must not hide the others
            out[m] = " ".join(str(exc).split()) or type(exc).__name__
    return out
