"""The worker's backstop for Cancel: a child that does not reach a cancel check in time is stopped by its
parent and its job ends `cancelled` (issue 16: Cancel lands within about 2 s even during start-up)."""
from __future__ import annotations

import multiprocessing as mp
import time

from services.jobs import state as job_state

from services.jobs import lifecycle as jobs

from services.jobs import worker
from services.team.users import get_or_create_user


def _sleeper() -> None:  # a job still importing torch / loading data: no cancel check for a long time
    time.sleep(120)


def _running_child(kind_params=("data.synth", {"name": "x", "n": 10})):
    uid = get_or_create_user("tester")
    jid = jobs.create_job(*kind_params, uid)
    proc = mp.get_context("fork").Process(target=_sleeper)
    proc.start()
    claim = job_state.claim(jid, "w-test", proc.pid)
    assert claim is not None
    return jid, proc


def test_a_child_past_the_grace_is_stopped_and_its_job_cancelled(monkeypatch):
    monkeypatch.setattr(worker, "CANCEL_GRACE_S", 0.0)
    jid, proc = _running_child()
    children = {proc.pid: worker._Running(jid, proc)}
    worker._enforce_cancel(children)  # no request yet: nothing happens
    assert proc.is_alive() and jobs.get_job(jid)["status"] == "running"
    assert jobs.request_cancel(jid, user_id=None)
    worker._enforce_cancel(children)
    proc.join(5)
    assert not proc.is_alive()
    row = jobs.get_job(jid)
    assert row["status"] == "cancelled" and row["pid"] is None


def test_a_child_within_the_grace_is_left_to_stop_by_itself(monkeypatch):
    monkeypatch.setattr(worker, "CANCEL_GRACE_S", 60.0)
    jid, proc = _running_child()
    children = {proc.pid: worker._Running(jid, proc)}
    assert jobs.request_cancel(jid, user_id=None)
    worker._enforce_cancel(children)
    try:
        assert proc.is_alive() and jobs.get_job(jid)["status"] == "running"
        assert children[proc.pid].cancel_seen is not None
    finally:
        proc.kill()
        proc.join(5)


def _deaf_sleeper() -> None:  # a job that never reaches a progress check and ignores SIGTERM
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)


def test_stopping_the_worker_releases_a_job_whose_child_would_not_stop(monkeypatch):
    """SIGTERM to the worker: a child past STOP_GRACE_S is killed and its job goes back to the queue with the
    attempt not counted (released, not lost), so a stopped worker never burns a retry."""
    monkeypatch.setattr(worker, "STOP_GRACE_S", 0.5)
    uid = get_or_create_user("tester")
    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, uid)
    proc = mp.get_context("fork").Process(target=_deaf_sleeper)
    proc.start()
    time.sleep(0.3)  # let it install its SIG_IGN
    assert job_state.claim(jid, "w-test", proc.pid) is not None
    children = {proc.pid: worker._Running(jid, proc)}
    worker._stop_children(children, "w-test")
    assert not proc.is_alive() and not children
    row = jobs.get_job(jid)
    assert row["status"] == "queued" and row["attempts"] == 0, row
    assert row["history"][-1]["status"] == "released"
