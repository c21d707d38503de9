"""The reaper every worker runs continuously (docs/architecture.md, "Jobs"): liveness is a lease, never a PID.

A running job is `lost` when the lease of the worker that claimed it has expired (the worker's row in `workers`
is renewed by its heartbeat; a clean stop ends it), or, for a job run inline by a CLI process (no worker row),
when the job's own heartbeat is older than a lease. No process is ever probed with kill(pid, 0): workers on one
host may live in separate PID namespaces. A lost job with retries left is queued again; a `queued` row whose
message is not on the queue a lease after it was sent (the queue was down at submit, a worker died between
taking the message and claiming the row, the queue restarted empty) is sent again. Duplicate messages are
harmless: a claim is one conditional update.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update

from db.models import Job, Worker, utcnow
from services.jobs import state as job_state
from services.platform import uploads
from services.platform.database import read_session, session
from services.jobs.queue import enqueue, pending_ids
from services.jobs.state import drop_state, state_path

HEARTBEAT_S = 3.0
LEASE_S = 20.0  # a worker's lease: renewed every HEARTBEAT_S; expired leases are reaped within LEASE_S + REAP_EVERY_S
STALE_AFTER_S = LEASE_S  # an inline job's own heartbeat is its lease
HUNG_AFTER_S = 600.0  # a job whose own heartbeat stopped this long counts as hung, even under a live worker
REAP_EVERY_S = 5.0
CONFIRM_S = 2 * HEARTBEAT_S  # an expired lease is confirmed by a later pass before its jobs are lost: after a
# long write held every writer up, each worker gets this long to renew before another one reaps it
LOST_DEAD = "the process running this job died"
LOST_STALE = "the worker running this job stopped renewing its lease"
LOST_HUNG = "the process running this job stopped sending heartbeats for 10 minutes (hung)"


_suspects: dict[str, float] = {}  # worker name or "job:ID" → monotonic time this process first saw it expired


def _confirmed(key: str, confirm_s: float) -> bool:
    """Whether `key` has looked expired for confirm_s (first sighting: start the clock)."""
    if confirm_s <= 0:
        return True
    first = _suspects.setdefault(key, time.monotonic())
    return time.monotonic() - first >= confirm_s


@dataclass
class Reaped:
    """What one reaper pass changed."""

    lost: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)


def _expired_workers(names: set[str], now, stale_after_s: float) -> set[str]:
    """Of these worker names, those with a row whose lease ended before `now` (names without a row are not
    returned: an inline run's own heartbeat decides)."""
    if not names:
        return set()
    cutoff = now - timedelta(seconds=stale_after_s)
    with read_session() as s:
        rows = s.execute(select(Worker.name, Worker.lease_until, Worker.heartbeat_at, Worker.stopped_at)
                         .where(Worker.name.in_(list(names)))).all()
    return {name for name, lease, hb, stopped in rows
            if stopped is not None or (lease < now if lease is not None else (hb is None or hb < cutoff))}


def _known_workers(names: set[str]) -> set[str]:
    if not names:
        return set()
    with read_session() as s:
        return set(s.scalars(select(Worker.name).where(Worker.name.in_(list(names)))).all())


def _lost_reason(worker: str | None, hb, expired: set[str], known: set[str], cutoff, hung) -> str | None:
    """Why a running job is lost now, or None while its lease holds."""
    if hb is not None and hb < hung:
        return LOST_HUNG
    if worker in known:
        return LOST_STALE if worker in expired else None
    return LOST_STALE if (hb is None or hb < cutoff) else None  # inline run: its own heartbeat is the lease


def reap(stale_after_s: float = STALE_AFTER_S, retry: bool = True, resend: bool = True,
         confirm_s: float = CONFIRM_S, grace_s: float = 0.0) -> Reaped:
    """One pass over running, lost and stranded queued jobs; returns what changed. Never raises (a worker must
    keep going): a database or queue error is logged and the next pass tries again. A lease must look expired
    for confirm_s (a later pass of this process) and for grace_s past its end before its jobs are lost."""
    out = Reaped()
    now = utcnow() - timedelta(seconds=grace_s)
    cutoff = now - timedelta(seconds=stale_after_s)
    hung = now - timedelta(seconds=max(stale_after_s, HUNG_AFTER_S))
    try:
        with read_session() as s:
            running = s.execute(select(Job.id, Job.attempts, Job.worker, Job.heartbeat_at)
                                .where(Job.status == "running")).all()
        names = {w for _, _, w, _ in running if w}
        known, expired = _known_workers(names), _expired_workers(names, now, stale_after_s)
        seen = set()
        for jid, attempt, worker, hb in running:
            reason = _lost_reason(worker, hb, expired, known, cutoff, hung)
            if reason is None:
                continue
            key = worker if worker in known and reason == LOST_STALE else f"job:{jid}"
            seen.add(key)
            if _confirmed(key, confirm_s) and job_state.mark_lost(jid, attempt, reason):
                out.lost.append(jid)
                release_uploads_if_final(jid)
        for key in set(_suspects) - seen:
            _suspects.pop(key, None)
        if retry:
            out.retried = retry_lost()
        drop_ended_state()
        if resend:
            out.resent = resend_stranded(stale_after_s)
    except Exception as exc:  # logged; the next pass tries again
        print(f"reaper: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


def send(job_id: int) -> bool:
    """Put a job id on the queue; False (logged) when the queue is unreachable: the sweeper sends it later."""
    try:
        enqueue(job_id)
        return True
    except Exception as exc:
        print(f"queue unreachable, job {job_id} stays queued and is sent again later: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return False


def retry_lost() -> list[int]:
    """Queue again every lost job with retries left; returns their ids."""
    with read_session() as s:
        rows = s.execute(select(Job.id, Job.attempts).where(Job.status == "lost", Job.attempts <= Job.max_retries,
                                                            Job.cancel_requested.is_(False))).all()
    done = []
    for jid, attempt in rows:
        if job_state.retry(jid, attempt):
            send(jid)
            done.append(jid)
    return done


def resend_stranded(older_than_s: float = LEASE_S) -> list[int]:
    """Send again every `queued` row whose message was sent more than a lease ago and is not on the queue now.
    Each row is taken by one conditional update of `queued_at`, so two workers never both resend it."""
    now = utcnow()
    sent = func.coalesce(Job.queued_at, Job.created_at)
    with read_session() as s:
        rows = s.execute(select(Job.id, Job.queued_at).where(
            Job.status == "queued", Job.cancel_requested.is_(False),
            sent < now - timedelta(seconds=older_than_s))).all()
    if not rows:
        return []
    waiting = pending_ids()
    done = []
    for jid, was in rows:
        if jid in waiting:
            continue
        with session() as s:
            res = s.execute(update(Job).where(Job.id == jid, Job.status == "queued",
                                              Job.queued_at.is_(None) if was is None else Job.queued_at == was)
                            .values(queued_at=now).execution_options(synchronize_session=False))
        if res.rowcount == 1 and send(jid):
            done.append(jid)
    return done


def release_uploads_if_final(job_id: int) -> None:
    """A lost import with no retry left will never read its upload pointers again: remove them now."""
    with read_session() as s:
        job = s.get(Job, job_id)
        if job is None or job.kind != "data.import" or (job.attempts <= job.max_retries and not job.cancel_requested):
            return
        params = dict(job.params or {})
    uploads.discard_import(params)


def drop_ended_state() -> None:
    """Remove the resume folders of jobs that have ended for good (lost with no retry left, or final)."""
    root = state_path(0).parent
    if not root.is_dir():
        return
    ids = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    if not ids:
        return
    with read_session() as s:
        live = set(s.scalars(select(Job.id).where(Job.id.in_(ids), (Job.status.in_(("queued", "running"))) | (
            (Job.status == "lost") & (Job.attempts <= Job.max_retries) & Job.cancel_requested.is_(False)))).all())
    for jid in ids:
        if jid not in live:
            drop_state(jid)
