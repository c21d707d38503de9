"""Concurrency on SQLite: 4 processes × 200 writes while a job updates progress: no lost rows, no 'database is locked'."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import types

from sqlalchemy import func, select

from db.models import Annotation, Job
from services.jobs import lifecycle as jobs
from services.platform.database import session
from services.team.users import get_or_create_user


def _writer(home: str, worker: int, n: int, q) -> None:
    os.environ["EXEMPLAR_HOME"] = home
    try:
        uid = get_or_create_user(f"writer-{worker}")
        for i in range(n):
            with session() as s:
                s.add(Annotation(user_id=uid, subject="explanation", quality="good", rating=1 + i % 5,
                                 comment=f"{worker}-{i}"))
        q.put(("ok", worker))
    except Exception as exc:  # reported to the parent, which fails the test
        q.put(("error", repr(exc)))


def _progress(home: str, job_id: int, n: int, q) -> None:
    os.environ["EXEMPLAR_HOME"] = home
    try:
        ctx = jobs.JobContext(job_id, {}, None, attempt=1)
        for i in range(n):
            ctx.progress(i / n, f"step {i}", metrics={"step": i}, force=True)
        q.put(("ok", "progress"))
    except Exception as exc:
        q.put(("error", repr(exc)))


def test_four_writers_and_a_progressing_job(exemplar_home, monkeypatch):
    # AppTest runs page scripts as __main__ in this process; spawn would re-run such a script in each child.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    home = str(exemplar_home)
    jid = jobs.create_job("data.synth", {"name": "x"}, user_id=None)
    from services.jobs import state as job_state

    assert job_state.claim(jid, "test", os.getpid()) is not None  # progress is written by the attempt running it
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(home, w, 200, q)) for w in range(4)]
    procs.append(ctx.Process(target=_progress, args=(home, jid, 100, q)))
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    with session() as s:
        assert s.scalar(select(func.count()).select_from(Annotation)) == 800
        comments = set(s.scalars(select(Annotation.comment)))
        assert len(comments) == 800
        job = s.get(Job, jid)
        assert len(job.metrics) == 100 and job.metrics[-1] == {"step": 99}
