"""Job lifecycle with a real worker process: success with progress rows, failure with traceback, cancel, lost worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from services.jobs import lifecycle as jobs
from services.jobs.worker import alive_workers
from tests.helpers_worker import start_worker, stop_worker, wait_for

FINAL = ("succeeded", "failed", "cancelled", "lost")


def test_success_failure_and_cancel_in_a_real_worker(exemplar_home):
    w = start_worker(exemplar_home)
    try:
        ok = jobs.submit("data.synth", {"name": "tiny", "n": 40, "size": 32, "confounder": 0.9, "seed": 1}, user_id=None)
        bad = jobs.submit("data.synth", {"name": "broken", "n": -5, "size": 32, "confounder": 0.9, "seed": 1}, user_id=None)
        row = wait_for(ok, lambda r: r["status"] in FINAL)
        assert row["status"] == "succeeded", row
        assert row["progress"] == 1.0 and row["result"]["dataset_id"] > 0
        assert row["started_at"] and row["finished_at"] and row["worker"]
        row = wait_for(bad, lambda r: r["status"] in FINAL)
        assert row["status"] == "failed"
        assert "Traceback" in jobs.get_job(bad)["error"] or row["error"]
        from db.models import Job
        from services.platform.database import session

        with session() as s:
            assert "Traceback" in s.get(Job, bad).traceback
        assert alive_workers(), "the worker's heartbeat is not recorded"
        long = jobs.submit("data.synth", {"name": "big", "n": 30000, "size": 128, "confounder": 0.9, "seed": 2}, user_id=None)
        wait_for(long, lambda r: r["status"] == "running")
        assert jobs.request_cancel(long, user_id=None)
        row = wait_for(long, lambda r: r["status"] in FINAL)
        assert row["status"] == "cancelled"
        from services.models.catalog import list_datasets

        assert "big" not in [d["name"] for d in list_datasets()], "a cancelled synth left a dataset row"
    finally:
        stop_worker(w)


def test_queued_job_cancelled_before_start_never_runs(exemplar_home):
    jid = jobs.submit("data.synth", {"name": "never", "n": 40, "size": 32, "confounder": 0.9, "seed": 1}, user_id=None)
    assert jobs.request_cancel(jid, user_id=None)
    assert jobs.get_job(jid)["status"] == "cancelled"
    w = start_worker(exemplar_home)
    try:
        done = jobs.submit("data.synth", {"name": "after", "n": 40, "size": 32, "confounder": 0.9, "seed": 1}, user_id=None)
        wait_for(done, lambda r: r["status"] == "succeeded")
        assert jobs.get_job(jid)["status"] == "cancelled" and jobs.get_job(jid)["started_at"] is None
    finally:
        stop_worker(w)


def test_lost_worker_recovery(exemplar_home):
    w = start_worker(exemplar_home)
    long = jobs.submit("data.synth", {"name": "big", "n": 30000, "size": 128, "confounder": 0.9, "seed": 3}, user_id=None)
    try:
        wait_for(long, lambda r: r["status"] == "running")
    finally:
        stop_worker(w, signal.SIGKILL)  # the worker dies without a chance to finish the job
    # the child died with its parent (parent-death signal): no orphan keeps running the job
    assert jobs.get_job(long)["status"] in ("running", "lost")
    w2 = start_worker(exemplar_home, "worker2.log")
    try:  # the new worker's reaper marks the attempt lost and retries it once
        row = wait_for(long, lambda r: r["attempts"] == 2 and r["status"] in ("running", "succeeded"), timeout=90)
        assert row["history"][0]["status"] == "lost" and "lease" in row["history"][0]["error"]  # its worker died
        assert jobs.request_cancel(long, user_id=None)
        wait_for(long, lambda r: r["status"] in FINAL)
    finally:
        stop_worker(w2)
