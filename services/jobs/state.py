"""Every change of a job's status is one conditional UPDATE, so two processes can never both win a transition.

queued → running (claim) · running → succeeded / failed / cancelled (finish) · running → queued (release) ·
running → lost (reaper) · lost → queued (retry). A transition names the attempt it belongs to, so a late
write of an attempt that was declared lost changes nothing.
"""
from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from db.models import Job, utcnow
from services.platform.database import session
from services.platform.settings import get_settings

FINAL = ("succeeded", "failed", "cancelled", "lost")
HOST = socket.gethostname()


@dataclass
class Claim:
    """What the process that won a claim needs to run the job."""

    job_id: int
    attempt: int
    kind: str
    params: dict
    user_id: int | None
    earlier: bool = False  # an earlier attempt of this job ended (lost / released): it may have left results


def _entry(job: Job, status: str, error: str | None = None) -> list:
    """history + one line for the attempt that just ended."""
    return list(job.history or []) + [{
        "attempt": job.attempts, "status": status, "worker": job.worker, "pid": job.pid, "host": job.host,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": utcnow().isoformat(), "error": (error or "")[:500] or None}]


def claim(job_id: int, worker: str, pid: int, host: str = HOST) -> Claim | None:
    """queued (and not cancel-requested) → running for this process; None when another process or a cancel won."""
    now = utcnow()
    with session() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
                        .values(status="running", attempts=Job.attempts + 1, worker=worker, pid=pid, host=host,
                                started_at=now, heartbeat_at=now, finished_at=None, progress=0.0, metrics=[],
                                message="started", error=None, traceback=None)
                        .execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return None
        job = s.get(Job, job_id)
        return Claim(job_id, int(job.attempts), job.kind, dict(job.params or {}), job.created_by,
                     earlier=bool(job.history))


def _mine(job_id: int, attempt: int):
    return (Job.id == job_id, Job.status == "running", Job.attempts == attempt)


def beat(job_id: int, attempt: int, **values: Any) -> bool | None:
    """Heartbeat (plus any progress values) for our attempt. Returns the cancel flag, or None when the row is no
    longer ours (declared lost, or released)."""
    with session() as s:
        res = s.execute(update(Job).where(*_mine(job_id, attempt)).values(heartbeat_at=utcnow(), **values)
                        .execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return None
        return bool(s.get(Job, job_id).cancel_requested)


def finish(job_id: int, attempt: int, status: str, result: dict | None = None, error: str | None = None,
           tb: str | None = None, timeline: list | None = None) -> bool:
    """running → a final status, only for our attempt (never over `cancelled` or `lost`)."""
    with session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt:
            return False
        msg = {"succeeded": job.message if job.message not in ("", "started") else "done",
               "cancelled": "cancelled"}.get(status, error or status)
        vals = dict(status=status, result=result, error=error, traceback=tb, finished_at=utcnow(),
                    heartbeat_at=utcnow(), message=msg, pid=None, history=_entry(job, status, error))
        if status == "succeeded":
            vals["progress"] = 1.0
        if timeline:
            vals["timeline"] = timeline
        res = s.execute(update(Job).where(*_mine(job_id, attempt)).values(**vals)
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def release(job_id: int, attempt: int, why: str = "the worker was stopped") -> bool:
    """running → queued again (the attempt does not count): the worker was asked to stop before the job ended.
    A job whose cancel was requested is cancelled instead (it would never be claimed again)."""
    with session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt:
            return False
        if job.cancel_requested:
            res = s.execute(update(Job).where(*_mine(job_id, attempt))
                            .values(status="cancelled", finished_at=utcnow(), pid=None, message="cancelled",
                                    error="cancelled by user", history=_entry(job, "cancelled", why))
                            .execution_options(synchronize_session=False))
            return res.rowcount == 1
        res = s.execute(update(Job).where(*_mine(job_id, attempt))
                        .values(status="queued", attempts=Job.attempts - 1, pid=None, message=f"requeued: {why}",
                                queued_at=utcnow(),
                                history=_entry(job, "released", why))
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def mark_lost(job_id: int, attempt: int, reason: str, pid: int | None = None) -> bool:
    """running → lost for that attempt (and that process, when pid is given)."""
    with session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt or (pid and job.pid != pid):
            return False
        res = s.execute(update(Job).where(*_mine(job_id, attempt))
                        .values(status="lost", finished_at=utcnow(), pid=None, message=reason, error=reason,
                                history=_entry(job, "lost", reason))
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def retry(job_id: int, attempt: int) -> bool:
    """lost → queued when retries are left and nobody asked to cancel; the caller enqueues it."""
    with session() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "lost", Job.attempts == attempt,
                                          Job.attempts <= Job.max_retries, Job.cancel_requested.is_(False))
                        .values(status="queued", finished_at=None, queued_at=utcnow(),
                                message=f"retrying: attempt {attempt} was lost")
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def cancelled_by_force(job_id: int, attempt: int, pid: int) -> bool:
    """running → cancelled for that attempt and process, after its worker stopped the process (the job did not
    reach a cancel check in time, e.g. while it was still importing torch or loading data)."""
    with session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt or job.pid != pid:
            return False
        res = s.execute(update(Job).where(*_mine(job_id, attempt), Job.cancel_requested.is_(True))
                        .values(status="cancelled", finished_at=utcnow(), pid=None, message="cancelled",
                                error="cancelled by user", history=_entry(job, "cancelled", "stopped by its worker"))
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def cancel(job_id: int) -> bool:
    """Set the cancel flag; a queued job becomes cancelled at once (it will never start). False if final."""
    with session() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "running")))
                        .values(cancel_requested=True).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return False
        s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                  .values(status="cancelled", finished_at=utcnow(), message="cancelled before start")
                  .execution_options(synchronize_session=False))
        return True


def state_path(job_id: int):
    """$EXEMPLAR_HOME/jobs/<id>: the job's resume state, kept across attempts of a lost / released job only."""
    return get_settings().home_dir / "jobs" / str(job_id)


def drop_state(job_id: int) -> None:
    """Remove the resume state of a job that has ended for good."""
    shutil.rmtree(state_path(job_id), ignore_errors=True)
