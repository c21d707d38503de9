"""The fault suite of bench/reliability.py (issue 23): each fault as an operator meets it, counted the same way.

Faults: a worker parent that took a message and died before its child claimed the row; the queue down at submit
and back 5 s later; the queue restarted (emptied) while jobs run and wait; two workers on one host in separate
PID namespaces (needs root and util-linux's unshare); a crash after a handler wrote its results and before the job
finished. Each row: jobs, stranded (not final 4 minutes after a worker and the queue were available), run twice
(attempts > 1 or two successes), duplicated results (more than one dataset / model per job), and the slowest
seconds from "a worker and the queue are available" to the job's final state.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 60.0
SMALL = {"n": 40, "size": 32, "seed": 0}


def _synth(tag: str, **kw) -> dict:
    return {"name": f"{tag}-{uuid.uuid4().hex[:6]}", **SMALL, **kw}


def _until_final(ids: list[int], t0: float, limit: float = 240.0) -> dict:
    """Wait for every job to be final; the slowest seconds since t0, and the rows."""
    from services.jobs import lifecycle as jobs

    rows: dict[int, dict] = {}
    ends: dict[int, float] = {}
    while len(ends) < len(ids) and time.monotonic() - t0 < limit:
        for j in ids:
            if j in ends:
                continue
            r = jobs.get_job(j)
            if r and r["status"] in jobs.FINAL:
                rows[j], ends[j] = r, time.monotonic() - t0
        time.sleep(0.2)
    for j in ids:
        rows.setdefault(j, jobs.get_job(j) or {"status": "missing", "attempts": 0, "history": []})
    return {"rows": rows, "slowest": max(ends.values()) if ends else float("nan"),
            "stranded": sum(1 for j in ids if j not in ends)}


def _count(rows: dict[int, dict]) -> dict:
    from db.models import Dataset, Model
    from services.platform.database import read_session

    twice = sum(1 for r in rows.values() if r["attempts"] > 1
                or sum(h.get("status") == "succeeded" for h in r.get("history") or []) > 1)
    dup = 0
    with read_session() as s:
        for j, r in rows.items():
            name = (r.get("params") or {}).get("name")
            if name:
                dup += max(0, int(s.scalar(select(func.count()).select_from(Dataset).where(Dataset.name == name))) - 1)
            dup += max(0, int(s.scalar(select(func.count()).select_from(Model).where(Model.job_id == j))) - 1)
    return {"twice": twice, "dup": dup, "failed": sum(1 for r in rows.values() if r["status"] != "succeeded")}


def _row(fault: str, ids: list[int], t0: float) -> dict:
    done = _until_final(ids, t0)
    return {"fault": fault, "jobs": len(ids), "stranded": done["stranded"], **_count(done["rows"]),
            "slowest": done["slowest"]}


def parent_died_after_dequeue() -> dict:
    """A worker parent took the messages and died before its child claimed the rows: the rows are `queued` with
    no message (written here as create_job without the send, so no running worker can take them first), sent
    a lease ago. The running workers' sweep must send them again."""
    from sqlalchemy import update

    from db.models import Job, utcnow
    from services.jobs import lifecycle as jobs
    from services.jobs import reaper
    from services.platform.database import session

    ids = [jobs.create_job("data.synth", _synth("dq"), user_id=None) for _ in range(3)]
    with session() as s:
        s.execute(update(Job).where(Job.id.in_(ids)).values(queued_at=utcnow() - timedelta(seconds=reaper.LEASE_S)))
    return _row("parent killed after dequeue", ids, time.monotonic())


def queue_down_at_submit(redis) -> dict:
    from services.jobs import lifecycle as jobs

    redis.stop(kill=True)
    ids = [jobs.submit("data.synth", _synth("down"), user_id=None) for _ in range(2)]
    time.sleep(5)
    redis.start()
    return _row("queue down at submit, back after 5 s", ids, time.monotonic())


def queue_restarted_mid_run(redis) -> dict:
    from services.jobs import lifecycle as jobs

    ids = [jobs.submit("data.synth", _synth("mid", n=1500, size=32), user_id=None) for _ in range(4)]
    time.sleep(3)  # one running, the rest waiting on the queue
    redis.stop(kill=True)
    redis.start()  # no persistence: the waiting messages are gone
    return _row("queue restarted mid-run", ids, time.monotonic())


def crash_after_results() -> dict:
    """A handler wrote its dataset, then its process died before finish; the retry runs in a worker."""
    from services.jobs import state as job_state
    from services.jobs import lifecycle as jobs
    from services.jobs import reaper

    ids = []
    for _ in range(2):
        jid = jobs.create_job("data.synth", _synth("crash"), user_id=None)
        c = job_state.claim(jid, f"inline:bench:{os.getpid()}", os.getpid())
        jobs._resolve("data.synth")(jobs.JobContext(jid, c.params, c.user_id, attempt=c.attempt))
        job_state.mark_lost(jid, c.attempt, reaper.LOST_DEAD)
        ids.append(jid)
    t0 = time.monotonic()
    reaper.retry_lost()
    row = _row("crash after results, before finish", ids, t0)
    row["twice"] = 0  # each ran twice by construction (the fault); what counts is `dup`
    return row


def pid_namespaces(start_ns_worker) -> dict | None:
    """A second worker in its own PID namespace on this host, beside the first; jobs long enough to overlap
    several reaper passes. None when unshare or root is missing."""
    from services.jobs import lifecycle as jobs

    if shutil.which("unshare") is None or os.geteuid() != 0:
        return None
    w = start_ns_worker()
    try:
        time.sleep(3)
        ids = [jobs.submit("data.synth", _synth("ns", n=2000, size=32), user_id=None) for _ in range(4)]
        return _row("two PID namespaces on one host", ids, time.monotonic())
    finally:
        for sig, wait in ((signal.SIGTERM, 40), (signal.SIGKILL, 10)):
            try:
                os.killpg(w.pid, sig)
                w.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def print_table(rows: list[dict]) -> None:
    print(f"\nfault suite (goal: 0 stranded, 0 run twice, 0 duplicated results, every job final ≤ {GOAL_S:.0f} s "
          "after a worker and the queue are available)")
    print(f"{'engine':<9} {'fault':<38} {'jobs':>4} {'stranded':>8} {'twice':>5} {'dup':>4} {'failed':>6} "
          f"{'slowest s':>9} {'≤ 60 s':>6}")
    for r in rows:
        print(f"{r['engine']:<9} {r['fault']:<38} {r['jobs']:>4} {r['stranded']:>8} {r['twice']:>5} {r['dup']:>4} "
              f"{r['failed']:>6} {r['slowest']:>9.1f} {'met' if r['slowest'] <= GOAL_S else 'missed':>6}")
