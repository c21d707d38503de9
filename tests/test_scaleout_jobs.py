"""Jobs that run exactly once and never hang (SQLite): conditional claim, cancel before start, final writes that
never overwrite lost / cancelled, the reaper, retries, NaN-safe JSON, reads that never wait, one-line CLI errors."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from db.models import Job, utcnow
from services.jobs import state as job_state
from services.jobs import lifecycle as jobs
from services.jobs import reaper
from services.platform.database import session

ROOT = Path(__file__).resolve().parents[1]
SYNTH = {"name": "t", "n": 40, "size": 32, "confounder": 0.9, "seed": 1}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_job_is_claimed_once_and_a_cancelled_one_never_starts():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    first = job_state.claim(jid, "w1", os.getpid())
    assert first is not None and first.attempt == 1
    assert job_state.claim(jid, "w2", os.getpid()) is None  # a duplicate delivery loses
    assert jobs.get_job(jid)["worker"] == "w1"
    other = jobs.create_job("data.synth", SYNTH, user_id=None)
    assert jobs.request_cancel(other, user_id=None)
    row = jobs.execute_job(other)  # what a worker does with the (stale) queue message
    assert row["status"] == "cancelled" and row["started_at"] is None and row["attempts"] == 0


def test_a_final_write_never_overwrites_lost_or_cancelled():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    c = job_state.claim(jid, "w1", os.getpid())
    assert job_state.mark_lost(jid, c.attempt, "test")
    assert not job_state.finish(jid, c.attempt, "succeeded", {"x": 1})
    assert jobs.get_job(jid)["status"] == "lost"
    assert job_state.beat(jid, c.attempt) is None  # the late attempt learns it is no longer running the job
    jid2 = jobs.create_job("data.synth", SYNTH, user_id=None)
    assert jobs.request_cancel(jid2, user_id=None)
    assert not job_state.finish(jid2, 1, "succeeded", {"x": 1})
    assert jobs.get_job(jid2)["status"] == "cancelled"


def _lease(name: str, seconds: float) -> None:
    """A worker row whose lease ends `seconds` from now (negative: expired)."""
    from db.models import Worker

    with session() as s:
        s.add(Worker(name=name, device="cpu", started_at=utcnow(), heartbeat_at=utcnow(),
                     lease_until=utcnow() + timedelta(seconds=seconds)))


def test_reaper_marks_a_job_whose_worker_lease_expired_and_retries_it_once(exemplar_home):
    from services.jobs.queue import dequeue

    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    assert jobs.get_job(jid)["max_retries"] == 1
    _lease("w1", -1)
    job_state.claim(jid, "w1", _dead_pid())
    out = reaper.reap(confirm_s=0)
    assert out.lost == [jid] and out.retried == [jid]
    row = jobs.get_job(jid)
    assert row["status"] == "queued" and row["attempts"] == 1 and row["history"][0]["status"] == "lost"
    assert dequeue() == jid  # the retry is on the queue
    _lease("w2", -1)
    job_state.claim(jid, "w2", _dead_pid())
    out = reaper.reap(confirm_s=0)
    assert out.lost == [jid] and out.retried == []  # retried once only
    row = jobs.get_job(jid)
    assert row["status"] == "lost" and row["attempts"] == 2 and [h["status"] for h in row["history"]] == ["lost"] * 2


def test_a_live_lease_keeps_a_job_whose_pid_this_process_cannot_see():
    """Two workers on one host in separate PID namespaces: the job's pid means nothing here, and no reaper
    probes it. The job lives exactly as long as its worker's lease."""
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    _lease("other-namespace", 60)
    job_state.claim(jid, "other-namespace", _dead_pid())  # a pid that does not exist in this namespace
    assert reaper.reap(retry=False, confirm_s=0).lost == []
    with session() as s:
        from db.models import Worker

        s.execute(update(Worker).where(Worker.name == "other-namespace").values(lease_until=utcnow()))
    assert reaper.reap(retry=False, confirm_s=0).lost == [jid]
    assert jobs.get_job(jid)["message"] == reaper.LOST_STALE


def test_reaper_marks_a_stale_heartbeat_on_another_host():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    c = job_state.claim(jid, "far", 12345, host="another-host")
    assert reaper.reap(retry=False, confirm_s=0).lost == []  # fresh heartbeat: alive as far as we can tell
    with session() as s:
        s.execute(update(Job).where(Job.id == jid).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    assert reaper.reap(retry=False, confirm_s=0).lost == [jid]
    assert jobs.get_job(jid)["message"] == reaper.LOST_STALE and c.attempt == 1


def test_inline_jobs_are_never_retried():
    row = jobs.run_inline("data.synth", SYNTH, echo=False, user_id=None)
    assert row["status"] == "succeeded" and row["max_retries"] == 0 and row["attempts"] == 1
    assert row["pid"] is None and row["worker"]


def test_nan_and_inf_are_stored_as_null_on_sqlite():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    with session() as s:
        s.get(Job, jid).result = {"nan": math.nan, "inf": [math.inf, -math.inf, 1.5], "nested": {"x": math.nan}}
    assert jobs.get_job(jid)["result"] == {"nan": None, "inf": [None, None, 1.5], "nested": {"x": None}}


def test_a_read_never_waits_behind_a_held_write():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    holding, reader_done = threading.Event(), threading.Event()

    def writer() -> None:
        with session() as s:
            s.execute(update(Job).where(Job.id == jid).values(message="held"))
            holding.set()
            reader_done.wait(60)  # released by the reader, or after a minute if the reader were blocked

    t = threading.Thread(target=writer)
    t.start()
    holding.wait(30)
    rows = jobs.list_jobs()  # must not wait for the writer's lock
    released_by_reader = not reader_done.is_set()
    reader_done.set()
    t.join()
    assert released_by_reader and rows[0]["message"] == "queued"  # the last committed state


def test_the_jobs_queue_import_cycle_is_gone():
    code = "import sys, services.jobs.queue; print('services.jobs.lifecycle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_simultaneous_upgrades_and_one_line_cli_errors(exemplar_home):
    exe = str(Path(sys.executable).with_name("exemplar"))
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home / "fresh")}
    ps = [subprocess.Popen([exe, "db", "upgrade", "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate() for p in ps]
    assert [p.returncode for p in ps] == [0, 0, 0], outs
    bad = subprocess.run([exe, "jobs", "list"], env={**env, "EXEMPLAR_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:1/x"},
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error:")


def test_a_released_job_that_was_asked_to_cancel_ends_cancelled():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    c = job_state.claim(jid, "w1", os.getpid())
    assert jobs.request_cancel(jid, user_id=None)
    assert job_state.release(jid, c.attempt)
    assert jobs.get_job(jid)["status"] == "cancelled"
    other = jobs.create_job("data.synth", SYNTH, user_id=None)
    c = job_state.claim(other, "w1", os.getpid())
    assert job_state.release(other, c.attempt)
    row = jobs.get_job(other)
    assert row["status"] == "queued" and row["attempts"] == 0 and row["history"][-1]["status"] == "released"


def test_a_job_under_a_live_lease_is_not_reaped_for_a_late_heartbeat_until_it_hangs():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    _lease("here", 60)
    job_state.claim(jid, "here", os.getpid())
    with session() as s:
        s.execute(update(Job).where(Job.id == jid).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    assert reaper.reap(retry=False, confirm_s=0).lost == []  # a long write may delay its beat: the lease holds
    with session() as s:
        s.execute(update(Job).where(Job.id == jid).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert reaper.reap(retry=False, confirm_s=0).lost == [jid] and jobs.get_job(jid)["message"] == reaper.LOST_HUNG
