"""The worker: takes job ids off the queue and runs each job in a child process of its own, reaps dead jobs
(every worker, continuously), renews its lease in `workers`, and stops cleanly on SIGTERM / Ctrl-C.

Every worker process has a unique id (its name plus a random suffix) and a lease row; its jobs are alive while
its lease is (services.jobs.reaper). It learns its own children's deaths from their exit codes, never by probing
PIDs, so workers in separate PID namespaces on one host never reap each other's jobs.

The parent never imports torch and never runs a job; a child runs exactly one job and dies with its parent
(parent-death signal on Linux, a watchdog thread elsewhere). SIGTERM: children give their jobs back to the
queue (released, the attempt does not count) and the parent puts them back on it before exiting.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from db.models import Worker, utcnow
from services.jobs import state as job_state, reaper
from services.platform.database import read_session, session
from db.engine import get_engine
from db.models import Job
from services.jobs.lifecycle import JobReleased, RELEASE, drop_state, execute_job, get_job
from services.jobs.queue import dequeue
from services.platform.settings import get_settings

STOP_GRACE_S = 30.0
CANCEL_POLL_S = 0.2    # how often the parent looks for cancel requests of its children's jobs
CANCEL_GRACE_S = 0.3   # a child that has not stopped by itself this long after the request is stopped by force
PR_SET_PDEATHSIG = 1


def _beat(name: str, device: str) -> None:
    """Renew this worker's lease (create its row on the first beat)."""
    now = utcnow()
    lease = now + timedelta(seconds=reaper.LEASE_S)
    with session() as s:
        w = s.scalars(select(Worker).where(Worker.name == name)).first()
        if w is None:
            s.add(Worker(name=name, device=device, started_at=now, heartbeat_at=now, lease_until=lease))
        else:
            w.heartbeat_at, w.device, w.lease_until, w.stopped_at = now, device, lease, None


def _end_lease(name: str) -> None:
    """A clean stop: the lease ends now (its jobs were released before)."""
    try:
        with session() as s:
            w = s.scalars(select(Worker).where(Worker.name == name)).first()
            if w is not None:
                w.stopped_at = w.lease_until = utcnow()
    except Exception as exc:  # the lease then simply expires
        print(f"worker {name}: could not end its lease: {type(exc).__name__}: {exc}", file=sys.stderr)


def alive_workers() -> list[dict]:
    """Workers whose lease holds now."""
    with read_session() as s:
        rows = s.scalars(select(Worker).where(Worker.lease_until >= utcnow(), Worker.stopped_at.is_(None))).all()
        return [{"name": w.name, "device": w.device, "heartbeat_at": w.heartbeat_at.isoformat(),
                 "lease_until": w.lease_until.isoformat()} for w in rows]


def _device_label() -> str:
    # Never initialise CUDA in the parent: ask the environment only.
    return os.environ.get("EXEMPLAR_DEVICE", "auto")


def default_name() -> str:
    """This worker process's unique id: EXEMPLAR_WORKER_NAME (else host:pid) plus a random suffix, so two
    workers never share a lease, whatever their host names and PID namespaces."""
    base = os.environ.get("EXEMPLAR_WORKER_NAME") or f"{job_state.HOST}:{os.getpid()}"
    return f"{base}-{secrets.token_hex(3)}"


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this child when its parent dies (its job then turns lost and is retried);
    a watchdog thread does the same where prctl is missing."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (AttributeError, OSError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _child(job_id: int, name: str, parent_pid: int) -> None:
    """Child process body: run one job, give it back on SIGTERM."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which sends SIGTERM

    def _release(*_):
        RELEASE.set()  # the job raises JobReleased at its next progress / cancel check (a safe point)

    signal.signal(signal.SIGTERM, _release)
    get_engine(get_settings().db_url).dispose(close=False)  # never reuse the parent's pooled connections
    code = 0
    try:
        execute_job(job_id, worker=name)
    except JobReleased:
        code = 3
    except Exception as exc:
        print(f"worker child for job {job_id}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class _Running:
    job_id: int
    proc: mp.Process
    cancel_seen: float | None = None  # monotonic time the parent first saw the job's cancel request


def _enforce_cancel(children: dict[int, _Running]) -> None:
    """Cancel lands within about 2 s even where a job has no cancel check yet (importing torch, loading a model
    or a dataset): a child still running CANCEL_GRACE_S after its job's cancel request is killed and the job
    marked cancelled. Jobs check the flag themselves between batches; this is the backstop."""
    if not children:
        return
    ids = {ch.job_id: ch for ch in children.values()}
    with read_session() as s:
        rows = s.execute(select(Job.id, Job.attempts, Job.pid).where(
            Job.id.in_(list(ids)), Job.status == "running", Job.cancel_requested.is_(True))).all()
    now = time.monotonic()
    for job_id, attempt, pid in rows:
        ch = ids[job_id]
        if pid != ch.proc.pid or ch.proc.exitcode is not None:
            continue
        ch.cancel_seen = ch.cancel_seen or now
        if now - ch.cancel_seen >= CANCEL_GRACE_S:
            ch.proc.kill()
            ch.proc.join(5)
            if job_state.cancelled_by_force(job_id, int(attempt), pid):
                drop_state(job_id)
                print(f"job {job_id}: cancelled (its process {pid} was stopped)", file=sys.stderr, flush=True)


def _collect(children: dict[int, _Running], name: str) -> None:
    """Forget finished children: a child that died running its job leaves it lost (and maybe retried); one that
    gave its job back has it put on the queue again at once; one that died before claiming leaves it to the
    sweep."""
    for pid, ch in list(children.items()):
        code = ch.proc.exitcode
        if code is None:
            continue
        ch.proc.join(0)
        del children[pid]
        row = get_job(ch.job_id)
        if row is None:
            continue
        if row["status"] == "running" and row["pid"] == pid and row["worker"] == name:
            if job_state.mark_lost(ch.job_id, row["attempts"], reaper.LOST_DEAD, pid=pid):
                print(f"job {ch.job_id}: its process {pid} died (exit {code}); marked lost", file=sys.stderr)
                reaper.release_uploads_if_final(ch.job_id)
                reaper.retry_lost()
        elif row["status"] == "queued" and code == 3:  # released (stopped): back on the queue now
            reaper.send(ch.job_id)
        # a child that died before it claimed its row (it never ran the job): the sweep re-sends it a lease
        # later (services.jobs.reaper.resend_stranded), so a child that keeps crashing is no fork loop


def _stop_children(children: dict[int, _Running], name: str) -> None:
    """Ask every child to give its job back; one that has not within STOP_GRACE_S (a job between progress
    checks: importing torch, one long batch) is killed and its job released here: the worker was stopped,
    the attempt does not count, whichever process ends it."""
    for ch in children.values():
        if ch.proc.exitcode is None:
            os.kill(ch.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    last_beat = time.monotonic()
    while any(ch.proc.exitcode is None for ch in children.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        if time.monotonic() - last_beat >= reaper.HEARTBEAT_S:  # the lease holds while the jobs wind down
            try:
                _beat(name, _device_label())
            except Exception as exc:
                print(f"worker {name}: lease renewal failed: {exc}", file=sys.stderr)
            last_beat = time.monotonic()
    for ch in children.values():
        if ch.proc.exitcode is None:
            ch.proc.kill()
            ch.proc.join(5)
        row = get_job(ch.job_id)  # still ours and running: the child was killed, or died of the signal itself
        if row and row["status"] == "running" and row["pid"] == ch.proc.pid:
            job_state.release(ch.job_id, int(row["attempts"]), "the worker was stopped before its job did")
    _collect(children, name)


def run_worker(workers: int = 1, name: str | None = None) -> None:
    """Blocking: run up to `workers` jobs at once, each in its own child process, until SIGTERM / Ctrl-C."""
    name = name or default_name()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    r = reaper.reap()
    if r.lost:
        print(f"marked {len(r.lost)} stale running job(s) as lost", file=sys.stderr)
    ctx = mp.get_context("fork")
    children: dict[int, _Running] = {}
    last_beat = last_reap = last_cancel = 0.0
    print(f"exemplar worker {name} ({workers} slot(s)) on queue {get_settings().queue}", file=sys.stderr, flush=True)
    while not stop.is_set():
        now = time.monotonic()
        try:
            if now - last_beat >= reaper.HEARTBEAT_S:
                _beat(name, _device_label())
                last_beat = now
            if now - last_reap >= reaper.REAP_EVERY_S:
                reaper.reap()
                last_reap = now
            if now - last_cancel >= CANCEL_POLL_S:
                _enforce_cancel(children)
                last_cancel = now
            _collect(children, name)
            if len(children) >= workers:
                stop.wait(0.2)
                continue
            job_id = dequeue()
        except Exception as exc:  # the database or the queue went away for a moment: log and go on
            print(f"worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            stop.wait(2.0)
            continue
        if job_id is None:
            stop.wait(0.3)
            continue
        proc = ctx.Process(target=_child, args=(job_id, name, os.getpid()), name=f"exemplar-job-{job_id}")
        proc.start()
        children[proc.pid] = _Running(job_id, proc)
    print(f"worker {name} stopping: releasing {len(children)} running job(s)", file=sys.stderr, flush=True)
    _stop_children(children, name)
    _end_lease(name)
