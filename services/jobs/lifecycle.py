"""Job wrapper that keeps the `jobs` row true: queued → running (heartbeat) → succeeded / failed / cancelled / lost.

Status changes go through services.jobs.state (one conditional update each); the reaper (services.jobs.reaper) turns
dead attempts into `lost` and queues the retries.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Any, Callable

from sqlalchemy import select, update

from db.models import Job, utcnow
from services.team import audit
from services.jobs import state as job_state
from services.platform.database import read_session, session
from services.platform.errors import plain_error
from services.jobs import kinds
from services.jobs.outputs import clear_outputs
from services.jobs.reaper import HEARTBEAT_S, STALE_AFTER_S, reap  # noqa: F401  (re-exported)
from services.team.access import require, require_cancel, running_job
from db.models import User
from services.jobs.queue import enqueue
from services.jobs.reaper import LEASE_S
from services.jobs.eta import Timeline

FINAL = job_state.FINAL
state_path, drop_state = job_state.state_path, job_state.drop_state  # re-exported for handlers


class JobCancelled(Exception):
    """Raised inside a handler when the user asked to cancel (cooperative, between steps)."""


class JobLost(BaseException):
    """Raised inside a handler whose attempt was declared lost meanwhile: stop, write nothing more."""


class JobReleased(BaseException):
    """Raised at the job's next progress / cancel check once its worker was asked to stop (RELEASE is set by
    the child's SIGTERM handler): the job goes back to the queue. Raised at a safe point, never from inside the
    signal handler, so no lock (the database pool's, the logging module's) is left held by an exception that
    arrived mid-call."""


RELEASE = threading.Event()  # set by a worker child's SIGTERM handler: give the running job back at the next check


class JobContext:
    """What a handler sees: its params, progress reporting (which checks the cancel flag), the job id and attempt."""

    def __init__(self, job_id: int, params: dict, user_id: int | None, echo: bool = False, attempt: int = 1):
        self.job_id, self.params, self.user_id, self.echo, self.attempt = job_id, params, user_id, echo, attempt
        self._last_write = 0.0
        self._metrics: list = []
        self._t0 = time.monotonic()
        self._timeline = Timeline()
        self.lost = threading.Event()

    @property
    def started(self) -> float:
        """time.monotonic() when this attempt started: the clock of its progress curve (`jobs.timeline`)."""
        return self._t0

    def progress(self, fraction: float, message: str = "", metrics: dict | None = None, force: bool = False,
                 left_s: float | None = None) -> None:
        """Record progress 0..1, a message and optionally one step's metrics (and the job's own estimate of the
        seconds left, kept in its progress curve: services/jobs/eta.py, by_job); raise JobCancelled if asked.
        Each write is its own short transaction."""
        now = time.monotonic()
        if self.echo and message:  # one updating line (\r), ended by execute_job: a refusal stays one plain line
            print(f"\r[{fraction:5.1%}] {message}\x1b[K" if sys.stderr.isatty() else f"\r[{fraction:5.1%}] {message}",
                  end="", file=sys.stderr, flush=True)
            self.echoed = True
        if self.lost.is_set():
            raise JobLost(f"job {self.job_id} attempt {self.attempt} was declared lost")
        if RELEASE.is_set():
            raise JobReleased("the worker was stopped")
        if not (force or metrics is not None or now - self._last_write > 0.5 or fraction >= 1.0):
            return
        self._last_write = now
        values: dict[str, Any] = {"progress": float(max(0.0, min(1.0, fraction)))}
        if self._timeline.add(now - self._t0, values["progress"], left_s):
            values["timeline"] = self._timeline.points()
        if message:
            values["message"] = message[:2000]
        if metrics is not None:
            self._metrics.append(metrics)
            values["metrics"] = list(self._metrics)
        cancel = job_state.beat(self.job_id, self.attempt, **values)
        if cancel is None:
            self.lost.set()
            raise JobLost(f"job {self.job_id} attempt {self.attempt} was declared lost")
        if cancel:
            raise JobCancelled("cancelled by user")

    def check_cancel(self) -> None:
        if RELEASE.is_set():
            raise JobReleased("the worker was stopped")
        with read_session() as s:
            if s.get(Job, self.job_id).cancel_requested:
                raise JobCancelled("cancelled by user")

    def state_dir(self):
        """A folder kept across attempts of this job (resume state, e.g. the last epoch's checkpoint)."""
        d = state_path(self.job_id)
        d.mkdir(parents=True, exist_ok=True)
        return d


def create_job(kind: str, params: dict, user_id: int | None, max_retries: int | None = None) -> int:
    kinds.JOB_KINDS.get(kind)  # an unknown kind is refused in one line naming the kinds
    actor = require(user_id, kind)  # team: role check (reader cannot train, import, ...)
    with session() as s:
        job = Job(kind=kind, params=params, created_by=actor["id"], status="queued", message="queued",
                  queued_at=utcnow(),
                  max_retries=kinds.max_retries_for(kind) if max_retries is None else int(max_retries))
        s.add(job)
        s.flush()
        audit.add(s, actor, "job.start", f"job:{job.id}", after={"kind": kind, "params": params})
        return job.id


QUEUE_DOWN = "queued; the queue was unreachable at submit: a running worker sends it when the queue is back"


def submit(kind: str, params: dict, user_id: int | None) -> int:
    """Create a jobs row and put it on the queue for a worker. The row is the truth: when the queue is down the
    row stays `queued` (its message says so, and one line goes to stderr) and the reaper's sweeper
    (services.jobs.reaper.resend_stranded) sends it a lease later, so a submission is never lost."""
    job_id = create_job(kind, params, user_id)
    try:
        enqueue(job_id)
    except Exception as exc:  # redis / sqlite queue unreachable
        with session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(message=QUEUE_DOWN)
                      .execution_options(synchronize_session=False))
        print(f"job {job_id}: {QUEUE_DOWN} ({type(exc).__name__})", file=sys.stderr, flush=True)
    return job_id


def active_duplicate(kind: str, params: dict) -> int | None:
    """The id of a queued or running job of this kind with exactly these params, else None: a page refuses to
    queue the same work twice (a form submitted by Enter and then by its button)."""
    with read_session() as s:
        rows = s.scalars(select(Job).where(Job.kind == kind, Job.status.in_(("queued", "running")))).all()
        return next((j.id for j in rows if (j.params or {}) == params), None)


def _resolve(kind: str) -> Callable[[JobContext], dict]:
    return kinds.handler(kind)


def _heartbeat(ctx: JobContext, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            if job_state.beat(ctx.job_id, ctx.attempt) is None:
                ctx.lost.set()
                return
        except Exception as exc:  # a missed beat is logged, never fatal to the job
            print(f"heartbeat for job {ctx.job_id} failed: {exc}", file=sys.stderr)


def execute_job(job_id: int, echo: bool = False, worker: str | None = None) -> dict[str, Any]:
    """Claim one queued jobs row and run it to a final state; returns the row as a dict. A row that is not
    queued (taken by another worker, cancelled, finished) is returned untouched. Used by worker and CLI."""
    c = job_state.claim(job_id, worker or f"inline:{job_state.HOST}:{os.getpid()}", os.getpid())
    if c is None:
        row = get_job(job_id)
        if row is None:
            raise ValueError(f"no job {job_id}")
        return row
    if c.earlier and not kinds.idempotent(c.kind):
        clear_outputs(job_id)  # a crash after results, before finish: the retry starts clean (no duplicates)
    ctx = JobContext(job_id, c.params, c.user_id, echo=echo, attempt=c.attempt)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, stop), daemon=True)
    beat.start()
    status, result, error, tb = "succeeded", None, None, None
    try:
        with running_job(job_id):
            result = _resolve(c.kind)(ctx)
    except JobCancelled:
        status, error = "cancelled", "cancelled by user"
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted"
    except JobLost:
        status = "lost"
    except JobReleased:
        status = "released"
    except Exception as exc:  # stored on the row: the jobs table is the truth
        status, error, tb = "failed", plain_error(exc), traceback.format_exc()
    finally:
        stop.set()
        beat.join(timeout=5)
        if getattr(ctx, "echoed", False):
            print(file=sys.stderr, flush=True)
    if status == "succeeded":  # the curve ends at 1.0: the next job of this kind reads each phase's cost from it
        ctx._timeline.add(time.monotonic() - ctx._t0, 1.0)
    if status == "released":
        job_state.release(job_id, c.attempt)
    elif status != "lost" and job_state.finish(job_id, c.attempt, status, result, error, tb,
                                               timeline=ctx._timeline.points()):
        drop_state(job_id)  # final: resume state (per-epoch checkpoints) is never read again
    return get_job(job_id)


def run_inline(kind: str, params: dict, user_id: int | None, echo: bool = True) -> dict:
    """Create and run a job in this process (the CLI's default); kept as for worker jobs, never retried."""
    return execute_job(create_job(kind, params, user_id, max_retries=0), echo=echo)


def request_cancel(job_id: int, user_id: int | None) -> bool:
    """Ask a job to stop; a queued one is cancelled at once and never starts. False when already final.
    Everyone may cancel their own jobs; admins anyone's (checked in services.team.roles)."""
    actor = require_cancel(job_id, user_id)
    if not job_state.cancel(job_id):
        return False
    with session() as s:
        status = s.get(Job, job_id).status
        audit.add(s, actor, "job.cancel", f"job:{job_id}", after={"status": status})
    if status == "cancelled":  # cancelled before it started: its resume state is never read
        drop_state(job_id)
    return True


def mark_lost(stale_after_s: float = STALE_AFTER_S) -> int:
    """One reaper pass, at once (no confirming pass): jobs whose worker's lease expired, inline runs whose own
    heartbeat is older than stale_after_s, hung jobs; returns how many became lost."""
    return len(reap(stale_after_s, confirm_s=0).lost)


def reap_for_readers() -> None:
    """Before a CLI read of the jobs table: one reaper pass that loses only leases a further lease past their end
    (no worker may be running to reap them, e.g. an inline run killed in local mode), so the list tells the truth."""
    reap(retry=True, resend=False, confirm_s=0, grace_s=LEASE_S)


def _iso(t) -> str | None:
    return t.isoformat() if t else None


def job_to_dict(job: Job) -> dict:
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
        "message": job.message, "params": job.params, "metrics": job.metrics, "result": job.result,
        "error": job.error, "cancel_requested": job.cancel_requested, "worker": job.worker,
        "pid": job.pid if job.status == "running" else None, "host": job.host,
        "attempts": job.attempts, "max_retries": job.max_retries, "history": job.history or [],
        "created_by": job.created_by, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "heartbeat_at": _iso(job.heartbeat_at),
        "timeline": job.timeline or [],
    }


def reference_timeline(kind: str, params: dict | None = None, look: int = 20) -> list | None:
    """The progress curve of the newest succeeded job of `kind` (one with the same params first, among the last
    `look`): the measured cost of each phase that an ETA weights the remaining work by (services/jobs/eta.py)."""
    with read_session() as s:
        rows = s.execute(select(Job.params, Job.timeline).where(Job.kind == kind, Job.status == "succeeded",
                                                                 Job.timeline.is_not(None))
                         .order_by(Job.id.desc()).limit(look)).all()
    done = [(p, t) for p, t in rows if t and t[-1][1] >= 1.0 and len(t) >= 2]
    same = [t for p, t in done if params is not None and p == params]
    return (same or [t for _, t in done] or [None])[0]


def list_jobs(limit: int = 100, status: str | None = None) -> list[dict]:
    """The most recent jobs (with the name of the user who started each, `created_by_name`)."""
    with read_session() as s:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if status:
            q = q.where(Job.status == status)
        rows = [job_to_dict(j) for j in s.scalars(q)]
        ids = {r["created_by"] for r in rows if r["created_by"] is not None}
        names = dict(s.execute(select(User.id, User.name).where(User.id.in_(ids))).all()) if ids else {}
    for r in rows:
        r["created_by_name"] = names.get(r["created_by"])
    return rows


def get_job(job_id: int) -> dict | None:
    with read_session() as s:
        j = s.get(Job, job_id)
        return job_to_dict(j) if j else None
