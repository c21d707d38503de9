"""Faults (issue 23): no job is stranded (a consumed message, a queue down at submit or restarted empty), a retry
after a crash between results and finish duplicates nothing, resume folders of jobs that ended for good go, the
writers' lock gives up with one line, and the app binds to loopback unless sign-in is configured."""
from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db.engine import DatabaseBusy, write_turn
from db.models import Dataset, Job, Model, utcnow
from services.jobs import state as job_state
from services.jobs import lifecycle as jobs
from services.jobs import reaper
from services.platform.database import ensure_schema, read_session, session
from services.jobs.queue import dequeue, pending_ids
from tests.helpers_redis import redis_server
from tests.helpers_worker import start_worker, stop_worker, wait_for

SYNTH = {"name": "t", "n": 40, "size": 32, "confounder": 0.9, "seed": 1}


def _age(job_id: int, seconds: float) -> None:
    """Pretend the row's message was sent `seconds` ago."""
    with session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(queued_at=utcnow() - timedelta(seconds=seconds)))


def test_a_consumed_message_whose_row_was_never_claimed_is_sent_again():
    jid = jobs.submit("data.synth", SYNTH, user_id=None)
    assert dequeue() == jid  # a worker parent took the message and died before its child claimed the row
    assert reaper.resend_stranded() == []  # not before a lease has passed
    _age(jid, 2 * reaper.LEASE_S)
    assert reaper.resend_stranded() == [jid] and pending_ids() == {jid}
    _age(jid, 2 * reaper.LEASE_S)
    assert reaper.resend_stranded() == []  # its message waits on the queue: no second copy


def test_a_queued_row_whose_message_waits_is_left_alone():
    jid = jobs.submit("data.synth", SYNTH, user_id=None)
    _age(jid, 10 * reaper.LEASE_S)  # waiting long behind busy workers is not stranded
    assert reaper.resend_stranded() == [] and pending_ids() == {jid}


def test_a_submit_while_the_queue_is_down_keeps_the_row_and_a_sweep_sends_it(monkeypatch, capsys):
    with redis_server() as url:
        down = url.rsplit(":", 1)[0] + ":1/0"  # nothing listens on port 1
        monkeypatch.setenv("EXEMPLAR_QUEUE_URL", down)
        jid = jobs.submit("data.synth", SYNTH, user_id=None)
        row = jobs.get_job(jid)
        assert row["status"] == "queued" and row["message"] == jobs.QUEUE_DOWN
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"job {jid}" in err[0]
        _age(jid, 2 * reaper.LEASE_S)
        assert reaper.reap().resent == []  # still down: logged, nothing raised
        monkeypatch.setenv("EXEMPLAR_QUEUE_URL", url)  # the queue is back
        assert reaper.reap().resent == [jid]
        assert dequeue() == jid


def test_a_retry_after_a_crash_between_results_and_finish_duplicates_nothing():
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    c = job_state.claim(jid, "w1", os.getpid())
    ctx = jobs.JobContext(jid, c.params, c.user_id, attempt=c.attempt)
    jobs._resolve("data.synth")(ctx)  # the handler wrote its dataset ...
    assert job_state.mark_lost(jid, c.attempt, reaper.LOST_DEAD)  # ... and the process died before finish
    assert job_state.retry(jid, c.attempt)
    row = jobs.execute_job(jid)
    assert row["status"] == "succeeded" and row["attempts"] == 2
    with read_session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset).where(Dataset.name == "t")) == 1


def test_a_retried_train_job_registers_one_model():
    jobs.run_inline("data.synth", SYNTH, echo=False, user_id=None)
    params = {"dataset": "t", "arch": "simple_cnn", "epochs": 1, "batch_size": 16, "seed": 0}
    jid = jobs.create_job("train", params, user_id=None)
    c = job_state.claim(jid, "w1", os.getpid())
    jobs._resolve("train")(jobs.JobContext(jid, c.params, c.user_id, attempt=c.attempt))
    with read_session() as s:
        assert s.scalar(select(func.count()).select_from(Model).where(Model.job_id == jid)) == 1
    job_state.mark_lost(jid, c.attempt, reaper.LOST_DEAD)
    job_state.retry(jid, c.attempt)
    assert jobs.execute_job(jid)["status"] == "succeeded"
    with read_session() as s:
        ckpts = s.scalars(select(Model.checkpoint).where(Model.job_id == jid)).all()
    assert len(ckpts) == 1


def _worker_row(name: str, lease_s: float) -> None:
    from db.models import Worker

    with session() as s:
        w = s.scalars(select(Worker).where(Worker.name == name)).first()
        if w is None:
            s.add(Worker(name=name, device="cpu", lease_until=utcnow() + timedelta(seconds=lease_s)))
        else:
            w.lease_until = utcnow() + timedelta(seconds=lease_s)


def test_an_expired_lease_is_confirmed_by_a_later_pass_before_its_jobs_are_lost(monkeypatch):
    """After a long write held every writer up, all leases look expired at once: each worker gets a little time
    to renew before another one reaps it. The reaper's clock is a fake one here, moved by the test."""
    clock = [1000.0]
    monkeypatch.setattr(reaper.time, "monotonic", lambda: clock[0])
    jid = jobs.create_job("data.synth", SYNTH, user_id=None)
    _worker_row("slow", -1)
    job_state.claim(jid, "slow", os.getpid())
    assert reaper.reap(retry=False, confirm_s=6).lost == []  # first sighting only
    _worker_row("slow", 60)  # it renewed meanwhile
    clock[0] += 7
    assert reaper.reap(retry=False, confirm_s=6).lost == []
    _worker_row("slow", -1)
    assert reaper.reap(retry=False, confirm_s=6).lost == []  # a new sighting starts the clock again
    clock[0] += 5
    assert reaper.reap(retry=False, confirm_s=6).lost == []  # not yet confirmed
    clock[0] += 2
    assert reaper.reap(retry=False, confirm_s=6).lost == [jid]


def test_a_cli_read_reaps_an_inline_run_whose_process_died_long_ago():
    """No worker may be running (local mode, an inline CLI run killed with -9): `jobs list` tells the truth."""
    jid = jobs.create_job("data.synth", SYNTH, max_retries=0, user_id=None)
    job_state.claim(jid, f"inline:{job_state.HOST}:1", 1)
    with session() as s:
        s.execute(update(Job).where(Job.id == jid).values(heartbeat_at=utcnow() - timedelta(seconds=30)))
    jobs.reap_for_readers()
    assert jobs.get_job(jid)["status"] == "running"  # within a lease and a grace: maybe only slow
    with session() as s:
        s.execute(update(Job).where(Job.id == jid).values(heartbeat_at=utcnow() - timedelta(seconds=90)))
    jobs.reap_for_readers()
    assert jobs.get_job(jid)["status"] == "lost"


def test_resume_folders_of_jobs_that_ended_for_good_are_removed():
    keep = jobs.create_job("data.synth", SYNTH, user_id=None)
    gone = jobs.create_job("data.synth", SYNTH, max_retries=0, user_id=None)
    for jid in (keep, gone):
        job_state.state_path(jid).mkdir(parents=True)
    c = job_state.claim(gone, "inline:x", os.getpid())
    job_state.mark_lost(gone, c.attempt, reaper.LOST_DEAD)  # no retry left
    reaper.drop_ended_state()
    assert job_state.state_path(keep).is_dir() and not job_state.state_path(gone).exists()


def test_a_lost_import_with_no_retry_left_forgets_its_upload_pointer(tmp_path):
    from services.platform import uploads
    from db.models import Worker

    up = uploads.register(tmp_path)
    jid = jobs.create_job("data.import", {"upload": up, "layout": "imagefolder", "name": "x"}, max_retries=0, user_id=None)
    with session() as s:
        s.add(Worker(name="gone", device="cpu", lease_until=utcnow() - timedelta(seconds=1)))
    c = job_state.claim(jid, "gone", os.getpid())
    assert uploads.resolve(up).resolve() == tmp_path.resolve()
    assert reaper.reap(retry=False, confirm_s=0).lost == [jid] and c.attempt == 1
    with pytest.raises(ValueError, match="start the import again"):
        uploads.resolve(up)


def test_the_writers_lock_gives_up_with_one_line_and_is_free_afterwards():
    url = ensure_schema()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write_turn(url):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    with pytest.raises(DatabaseBusy) as e:
        with write_turn(url, wait_s=0.3):
            pass
    assert "busy" in str(e.value) and "\n" not in str(e.value)
    release.set()
    t.join()
    jobs.create_job("data.synth", SYNTH, user_id=None)  # the abandoned wait released the lock when it finally got it


def test_a_forked_child_does_not_keep_the_writers_lock():
    """flock belongs to the open file: a worker child forked while its parent held (or waited on) the writers'
    lock must not keep it for the child's life."""
    url = ensure_schema()
    r, w = os.pipe()
    with write_turn(url):
        pid = os.fork()
        if pid == 0:  # the child lives until the parent has tried the lock again
            os.close(w)
            os.read(r, 1)
            os._exit(0)
    os.close(r)
    try:
        with write_turn(url, wait_s=1.0):  # DatabaseBusy if the child still held the lock
            pass
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)


def test_the_app_serves_loopback_only_without_sign_in(monkeypatch):
    from pathlib import Path

    from services.team.serving import INSECURE_ENV, bind_refusal

    cfg = (Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text()
    assert 'address = "127.0.0.1"' in cfg
    assert bind_refusal("127.0.0.1") is None and bind_refusal("localhost") is None
    assert "refusing" in bind_refusal("0.0.0.0") and "refusing" in bind_refusal("")  # "" is every interface
    monkeypatch.setenv(INSECURE_ENV, "1")
    assert bind_refusal("0.0.0.0") is None


def test_a_worker_runs_a_job_whose_message_was_lost(exemplar_home):
    """The worker parent died after taking the message: the next worker's sweep sends it again; it runs once."""
    jid = jobs.submit("data.synth", SYNTH, user_id=None)
    assert dequeue() == jid
    _age(jid, 2 * reaper.LEASE_S)
    w = start_worker(exemplar_home)
    try:
        row = wait_for(jid, lambda r: r["status"] in jobs.FINAL, timeout=120)
    finally:
        stop_worker(w)
    assert row["status"] == "succeeded" and row["attempts"] == 1
