"""Job wrapper that keeps the `jobs` row true: queued → running (heartbeat) → succeeded / failed / cancelled / lost."""
from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import select

from db.models import Job, utcnow
from services.database import session
from services.errors import plain_error
from services.handlers import HANDLERS

HEARTBEAT_S = 3.0
STALE_AFTER_S = 30.0
FINAL = ("succeeded", "failed", "cancelled", "lost")


class JobCancelled(Exception):
    """Raised inside a handler when the user asked to cancel (cooperative, between steps)."""


class JobContext:
    """What a handler sees: its params, progress reporting (which checks the cancel flag) and the job id."""

    def __init__(self, job_id: int, params: dict, user_id: int | None, echo: bool = False):
        self.job_id, self.params, self.user_id, self.echo = job_id, params, user_id, echo
        self._last_write = 0.0

    def progress(self, fraction: float, message: str = "", metrics: dict | None = None, force: bool = False) -> None:
        """Record progress 0..1, a message and optionally one step's metrics; raise JobCancelled if asked."""
        now = time.monotonic()
        if self.echo and message:  # one updating line (\r), ended by execute_job: a refusal stays one plain line
            print(f"\r[{fraction:5.1%}] {message}\x1b[K" if sys.stderr.isatty() else f"\r[{fraction:5.1%}] {message}",
                  end="", file=sys.stderr, flush=True)
            self.echoed = True
        if not (force or metrics is not None or now - self._last_write > 0.5 or fraction >= 1.0):
            return
        self._last_write = now
        with session() as s:
            job = s.get(Job, self.job_id)
            job.progress = float(max(0.0, min(1.0, fraction)))
            if message:
                job.message = message[:2000]
            if metrics is not None:
                job.metrics = list(job.metrics or []) + [metrics]
            job.heartbeat_at = utcnow()
            cancel = job.cancel_requested
        if cancel:
            raise JobCancelled("cancelled by user")

    def check_cancel(self) -> None:
        with session() as s:
            if s.get(Job, self.job_id).cancel_requested:
                raise JobCancelled("cancelled by user")


def create_job(kind: str, params: dict, user_id: int | None = None) -> int:
    if kind not in HANDLERS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(HANDLERS))}")
    with session() as s:
        job = Job(kind=kind, params=params, created_by=user_id, status="queued", message="queued")
        s.add(job)
        s.flush()
        return job.id


def submit(kind: str, params: dict, user_id: int | None = None) -> int:
    """Create a jobs row and put it on the queue for a worker."""
    from services.queue import enqueue

    job_id = create_job(kind, params, user_id)
    enqueue(job_id)
    return job_id


def active_duplicate(kind: str, params: dict) -> int | None:
    """The id of a queued or running job of this kind with exactly these params, else None: a page refuses to
    queue the same work twice (a form submitted by Enter and then by its button)."""
    with session() as s:
        rows = s.scalars(select(Job).where(Job.kind == kind, Job.status.in_(("queued", "running")))).all()
        return next((j.id for j in rows if (j.params or {}) == params), None)


def _resolve(kind: str) -> Callable[[JobContext], dict]:
    mod, fn = HANDLERS[kind].split(":")
    return getattr(importlib.import_module(mod), fn)


def _heartbeat(job_id: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            with session() as s:
                job = s.get(Job, job_id)
                if job is not None and job.status == "running":
                    job.heartbeat_at = utcnow()
        except Exception as exc:  # a missed beat is logged, never fatal to the job
            print(f"heartbeat for job {job_id} failed: {exc}", file=sys.stderr)


def execute_job(job_id: int, echo: bool = False) -> dict[str, Any]:
    """Run one jobs row to a final state; returns the row as a dict. Used by the worker and by the CLI inline."""
    with session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        if job.status != "queued":
            return job_to_dict(job)
        if job.cancel_requested:
            job.status, job.finished_at, job.message = "cancelled", utcnow(), "cancelled before start"
            return job_to_dict(job)
        job.status, job.started_at, job.heartbeat_at = "running", utcnow(), utcnow()
        job.worker = f"{socket.gethostname()}:{os.getpid()}"
        job.message = "started"
        kind, params, user_id = job.kind, dict(job.params or {}), job.created_by
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job_id, stop), daemon=True)
    beat.start()
    ctx = JobContext(job_id, params, user_id, echo=echo)
    status, result, error, tb = "succeeded", None, None, None
    try:
        result = _resolve(kind)(ctx)
    except JobCancelled:
        status, error = "cancelled", "cancelled by user"
    except Exception as exc:  # stored on the row: the jobs table is the truth
        status, error, tb = "failed", plain_error(exc), traceback.format_exc()
    finally:
        stop.set()
        beat.join(timeout=5)
        if getattr(ctx, "echoed", False):
            print(file=sys.stderr, flush=True)
    with session() as s:
        job = s.get(Job, job_id)
        job.status, job.result, job.error, job.traceback = status, result, error, tb
        job.finished_at, job.heartbeat_at = utcnow(), utcnow()
        if status == "succeeded":
            job.progress, job.message = 1.0, (job.message if job.message != "started" else "done")
        elif status == "cancelled":
            job.message = "cancelled"
        else:
            job.message = error or "failed"
        return job_to_dict(job)


def run_inline(kind: str, params: dict, user_id: int | None = None, echo: bool = True) -> dict:
    """Create and run a job in this process (the CLI's default); the row is kept as for worker jobs."""
    return execute_job(create_job(kind, params, user_id), echo=echo)


def request_cancel(job_id: int) -> bool:
    with session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status in FINAL:
            return False
        job.cancel_requested = True
        if job.status == "queued":
            job.status, job.finished_at, job.message = "cancelled", utcnow(), "cancelled before start"
        return True


def _dead_here(worker: str | None) -> bool:
    """True when the job's worker process ran on this host and no longer exists."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A killed worker child nobody reaped (its parent died too, and PID 1 of a container may not reap) still
    answers kill(pid, 0); /proc says it is a zombie. False where /proc is absent."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def mark_lost(stale_after_s: float = STALE_AFTER_S) -> int:
    """Jobs left `running` whose process died on this host, or whose heartbeat is older than stale_after_s,
    become `lost`; returns how many."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with session() as s:
        rows = s.scalars(select(Job).where(Job.status == "running")).all()
        n = 0
        for job in rows:
            if _dead_here(job.worker) or job.heartbeat_at is None or job.heartbeat_at < cutoff:
                job.status, job.finished_at = "lost", utcnow()
                job.message = job.error = "the worker stopped while this job was running"
                n += 1
        return n


def job_to_dict(job: Job) -> dict:
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
        "message": job.message, "params": job.params, "metrics": job.metrics, "result": job.result,
        "error": job.error, "cancel_requested": job.cancel_requested, "worker": job.worker,
        "created_by": job.created_by,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
    }


def list_jobs(limit: int = 100, status: str | None = None) -> list[dict]:
    with session() as s:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if status:
            q = q.where(Job.status == status)
        return [job_to_dict(j) for j in s.scalars(q)]


def get_job(job_id: int) -> dict | None:
    with session() as s:
        j = s.get(Job, job_id)
        return job_to_dict(j) if j else None
