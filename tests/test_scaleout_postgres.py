"""Scale-out for real: PostgreSQL + redis-server + two workers. Simultaneous upgrades, 20 jobs each run exactly
once on both workers, a killed child's job lost and retried by the other worker, a cancelled job never starts,
NaN metrics stored as null on both engines."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from db.engine import session_scope
from db.migrate import upgrade
from db.models import Model
from services.jobs import lifecycle as jobs
from tests.helpers_pg import fresh_database, postgres_url  # noqa: F401
from tests.helpers_redis import redis_url  # noqa: F401
from tests.helpers_worker import start_worker, stop_worker, wait_for

ROOT = Path(__file__).resolve().parents[1]
FINAL = ("succeeded", "failed", "cancelled", "lost")


def _nan_round_trip(url: str) -> None:
    upgrade(url)
    with session_scope(url) as s:
        s.add(Model(name="m", arch="simple_cnn", checkpoint="x", metrics={"val": {"ar": math.nan, "f1": math.inf}},
                    config={"history": [{"loss": -math.inf}, {"loss": 0.25}]}))
    with session_scope(url, readonly=True) as s:
        m = s.query(Model).one()
        assert m.metrics == {"val": {"ar": None, "f1": None}} and m.config["history"][1] == {"loss": 0.25}


def test_nan_metrics_register_on_sqlite(tmp_path):
    _nan_round_trip(f"sqlite:///{tmp_path / 'n.db'}")


@pytest.mark.postgres
def test_nan_metrics_register_on_postgres(postgres_url):  # noqa: F811
    _nan_round_trip(fresh_database(postgres_url))


def _upgrade_three_at_once(env: dict) -> None:
    exe = str(Path(sys.executable).with_name("exemplar"))
    ps = [subprocess.Popen([exe, "db", "upgrade"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert [p.returncode for p in ps] == [0, 0, 0], outs


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_on_postgres_and_redis(postgres_url, redis_url, exemplar_home, monkeypatch):  # noqa: F811
    url = fresh_database(postgres_url)
    monkeypatch.setenv("EXEMPLAR_DATABASE_URL", url)
    monkeypatch.setenv("EXEMPLAR_QUEUE_URL", redis_url)
    _upgrade_three_at_once(dict(os.environ))
    from services.jobs.queue import enqueue

    never = jobs.create_job("data.synth", {"name": "never", "n": 40, "size": 32, "confounder": 0.9, "seed": 1}, user_id=None)
    assert jobs.request_cancel(never, user_id=None)
    enqueue(never)  # a stale message for a cancelled job
    w1, w2 = start_worker(exemplar_home, "w1.log"), start_worker(exemplar_home, "w2.log")
    try:
        ids = [jobs.submit("data.synth", {"name": f"s{i}", "n": 40, "size": 32, "confounder": 0.9, "seed": i}, user_id=None)
               for i in range(20)]
        rows = [wait_for(j, lambda r: r["status"] in FINAL, timeout=600) for j in ids]
        assert [r["status"] for r in rows] == ["succeeded"] * 20, [r["error"] for r in rows]
        assert all(r["attempts"] == 1 and len(r["history"]) == 1 for r in rows)  # each ran exactly once
        assert len({r["worker"] for r in rows}) == 2, "both workers took jobs"
        row = jobs.get_job(never)
        assert row["status"] == "cancelled" and row["started_at"] is None and row["attempts"] == 0
        _kill_a_child_and_see_the_other_worker_retry(exemplar_home, w1, w2)
    finally:
        for w in (w1, w2):
            try:
                os.killpg(w.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            stop_worker(w)


def _kill_a_child_and_see_the_other_worker_retry(home, w1, w2) -> None:
    import socket

    long = jobs.submit("data.synth", {"name": "big", "n": 30000, "size": 128, "confounder": 0.9, "seed": 3}, user_id=None)
    row = wait_for(long, lambda r: r["status"] == "running" and r["pid"], timeout=300)
    victim, other = (w1, w2) if row["worker"].startswith(f"{socket.gethostname()}:{w1.pid}-") else (w2, w1)
    assert row["worker"].startswith(f"{socket.gethostname()}:{victim.pid}-")  # host:pid + a unique suffix
    os.kill(victim.pid, signal.SIGSTOP)  # its own worker cannot notice and its lease lapses: the other one reaps
    os.kill(row["pid"], signal.SIGKILL)
    lost = wait_for(long, lambda r: r["attempts"] == 2 and r["status"] in ("running", "succeeded"), timeout=90)
    assert lost["history"][0]["status"] == "lost" and lost["worker"].startswith(f"{socket.gethostname()}:{other.pid}-")
    assert jobs.request_cancel(long, user_id=None)
    wait_for(long, lambda r: r["status"] in FINAL, timeout=120)
