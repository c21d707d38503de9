"""The detail view's comparison store (services/explanations/compare.py): a key is computed once however often it is
asked for, a failure becomes its error text, and the store forgets the oldest beyond KEEP."""
from __future__ import annotations

import threading

from services.explanations import compare


def _wait(store: compare.CompareStore, key) -> None:
    done = threading.Event()
    store.pool.submit(done.set)  # one worker thread: this runs after every job queued before it
    assert done.wait(60)


def test_a_key_is_computed_once_and_a_failure_is_its_error_text():
    s, calls = compare.CompareStore(), []
    gate = threading.Event()

    def slow():
        gate.wait(60)
        calls.append(1)
        return {"gradcam": "map"}

    s.start(("m", 1), slow)
    assert s.status(("m", 1)) == "pending"
    s.start(("m", 1), slow)  # asked again while pending: not queued twice
    gate.set()
    _wait(s, ("m", 1))
    s.start(("m", 1), slow)  # asked again once done: reused
    _wait(s, ("m", 1))
    assert calls == [1] and s.status(("m", 1)) == "done" and s.result(("m", 1)) == {"gradcam": "map"}

    def broken():
        raise RuntimeError("no target layer\n  found")

    s.start(("m", 2), broken)
    _wait(s, ("m", 2))
    assert s.result(("m", 2)) == {"error": "no target layer found"}


def test_the_store_forgets_the_oldest_beyond_keep(monkeypatch):
    monkeypatch.setattr(compare, "KEEP", 3)
    s = compare.CompareStore()
    for i in range(5):
        s.start(i, lambda i=i: {"i": i})
    _wait(s, 4)
    assert [s.status(i) for i in range(5)] == ["none", "none", "done", "done", "done"]
