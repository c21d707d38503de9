"""A worker's job child dies with its parent (no orphan keeps running or taking jobs), and SIGTERM hands the
running job back to the queue instead of leaving it `running`."""
from __future__ import annotations

import os
import signal
import time

from services.jobs import lifecycle as jobs
from tests.helpers_worker import start_worker, stop_worker, wait_for

BIG = {"name": "big", "n": 30000, "size": 128, "confounder": 0.9, "seed": 3}


def _exists(pid: int) -> bool:
    """The test's own probe (the product never probes PIDs: liveness is a lease): alive and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return False


def _gone(host: str, pid: int, tries: int = 600) -> bool:
    for _ in range(tries):
        if not _exists(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_job_child_dies_with_its_worker_and_the_job_is_retried(exemplar_home):
    w = start_worker(exemplar_home)
    jid = jobs.submit("data.synth", BIG, user_id=None)
    try:
        row = wait_for(jid, lambda r: r["status"] == "running" and r["pid"])
        os.kill(w.pid, signal.SIGKILL)  # the parent only: its child gets the parent-death signal
        w.wait()
        assert _gone(row["host"], row["pid"]), "the job's child outlived its worker"
    finally:
        stop_worker(w, signal.SIGKILL)
    w2 = start_worker(exemplar_home, "worker2.log")
    try:
        row = wait_for(jid, lambda r: r["attempts"] == 2 and r["status"] == "running")
        assert row["history"][0]["status"] == "lost"
        assert jobs.request_cancel(jid, user_id=None)
        wait_for(jid, lambda r: r["status"] in jobs.FINAL)
    finally:
        stop_worker(w2)


def test_sigterm_releases_the_running_job(exemplar_home):
    w = start_worker(exemplar_home)
    jid = jobs.submit("data.synth", BIG, user_id=None)
    try:
        wait_for(jid, lambda r: r["status"] == "running" and r["pid"])
    finally:
        stop_worker(w, signal.SIGTERM, grace=120.0)  # a loaded CI machine may take a while to release
    row = jobs.get_job(jid)
    assert row["status"] == "queued" and row["attempts"] == 0 and row["history"][-1]["status"] == "released", row
    w2 = start_worker(exemplar_home, "worker2.log")  # the job is back on the queue: the next worker takes it
    try:
        wait_for(jid, lambda r: r["status"] == "running" and r["attempts"] == 1)
        assert jobs.request_cancel(jid, user_id=None)
        wait_for(jid, lambda r: r["status"] in jobs.FINAL)
    finally:
        stop_worker(w2)
