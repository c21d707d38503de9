"""Engine and session factory for a database URL; SQLite gets WAL, busy_timeout and foreign keys.

Writes begin IMMEDIATE on SQLite (writers queue on busy_timeout, never fail on a lock upgrade) and first take
their turn on a file lock beside the database, so waiting writers are woken in turn instead of polling SQLite's
busy handler (which starves some of them for seconds); read-only sessions begin DEFERRED, so under WAL a read
never waits for a write. Both engines share one JSON encoder.
"""
from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.jsonsafe import dumps

READONLY = "exemplar_readonly"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    """One engine per URL and process."""
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, json_serializer=dumps)
        event.listen(eng, "connect", _sqlite_pragmas)

        @event.listens_for(eng, "begin")
        def _begin(conn):  # noqa: ANN001
            # Writers take the write lock at BEGIN so they queue on busy_timeout instead of failing a lock
            # upgrade ("database is locked"); readers stay deferred and read the last committed WAL snapshot.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READONLY) else "BEGIN IMMEDIATE")

        return eng
    return create_engine(url, pool_pre_ping=True, json_serializer=dumps)


@lru_cache(maxsize=32)
def _factory(url: str, readonly: bool = False) -> sessionmaker:
    eng = get_engine(url)
    if readonly:
        eng = eng.execution_options(**{READONLY: True})
    return sessionmaker(bind=eng, expire_on_commit=False)


_turn = threading.local()


def _sqlite_file(url: str) -> str | None:
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return None if not path or path.startswith(":memory:") else path


@contextmanager
def write_turn(url: str) -> Iterator[None]:
    """On a SQLite file: hold the writers' file lock (re-entrant per thread) for the whole write transaction."""
    path = _sqlite_file(url)
    if path is None or getattr(_turn, "depth", 0):
        _turn.depth = getattr(_turn, "depth", 0) + 1
        try:
            yield
        finally:
            _turn.depth -= 1
        return
    fd = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _turn.depth = 1
        yield
    finally:
        _turn.depth = 0
        os.close(fd)  # releases the lock


@contextmanager
def session_scope(url: str, readonly: bool = False) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error. readonly=True: a deferred (never waiting) read;
    anything written in it is rolled back."""
    if readonly:
        with _session(url, True) as s:
            yield s
        return
    with write_turn(url), _session(url, False) as s:
        yield s


@contextmanager
def _session(url: str, readonly: bool) -> Iterator[Session]:
    s: Session = _factory(url, readonly)()
    try:
        yield s
        if readonly:
            s.rollback()
        else:
            s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()
