"""The reaper every worker runs continuously: a running job whose heartbeat is stale, or whose process on this
host is gone, becomes `lost`; a lost job with retries left is queued again (whichever worker notices first)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from db.models import Job, utcnow
from services import job_state
from services.database import read_session

HEARTBEAT_S = 3.0
STALE_AFTER_S = 20.0  # heartbeat age that counts as dead (reaped within 30 s with REAP_EVERY_S)
HUNG_AFTER_S = 600.0  # on this host, a live process counts as hung only after this long without a heartbeat
REAP_EVERY_S = 5.0
LOST_DEAD = "the process running this job died"
LOST_STALE = "the worker stopped sending heartbeats while this job was running"
LOST_HUNG = "the process running this job stopped sending heartbeats for 10 minutes (hung)"


@dataclass
class Reaped:
    lost: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)


def process_gone(host: str | None, pid: int | None) -> bool:
    """True when pid ran on this host and no longer exists (or is an unreaped zombie)."""
    if not pid or host != job_state.HOST:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A killed child nobody reaped yet still answers kill(pid, 0); /proc says it is a zombie."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def reap(stale_after_s: float = STALE_AFTER_S, retry: bool = True) -> Reaped:
    """One pass over the running and lost jobs; returns what changed. Never raises (a worker must keep going)."""
    out = Reaped()
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    hung = utcnow() - timedelta(seconds=max(stale_after_s, HUNG_AFTER_S))
    try:
        with read_session() as s:
            running = s.execute(select(Job.id, Job.attempts, Job.pid, Job.host, Job.heartbeat_at)
                                .where(Job.status == "running")).all()
        for jid, attempt, pid, host, hb in running:
            here = host == job_state.HOST and bool(pid)
            if process_gone(host, pid):
                reason = LOST_DEAD
            elif here and hb is not None and hb < hung:
                reason = LOST_HUNG
            elif not here and (hb is None or hb < cutoff):
                reason = LOST_STALE  # another host: the heartbeat is all we can see
            else:
                continue  # alive here (a long write may delay its beat), or fresh elsewhere
            if job_state.mark_lost(jid, attempt, reason):
                out.lost.append(jid)
        if retry:
            out.retried = retry_lost()
    except Exception as exc:  # logged; the next pass tries again
        print(f"reaper: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


def retry_lost() -> list[int]:
    """Queue again every lost job with retries left; returns their ids."""
    from services.queue import enqueue

    with read_session() as s:
        rows = s.execute(select(Job.id, Job.attempts).where(Job.status == "lost", Job.attempts <= Job.max_retries,
                                                            Job.cancel_requested.is_(False))).all()
    done = []
    for jid, attempt in rows:
        if job_state.retry(jid, attempt):
            enqueue(jid)
            done.append(jid)
    return done
