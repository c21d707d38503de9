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
WRITE_WAIT_S = 30.0  # how long a writer waits for its turn before it gives up with DatabaseBusy


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={int(WRITE_WAIT_S * 1000)}")
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


_lock_fds: set[int] = set()  # fds on the writers' lock file this process holds or waits on (incl. given-up waits)


def _forget_inherited_locks() -> None:
    """In a forked child: close the copies of the parent's lock fds. flock belongs to the open file, so a child
    keeping a copy would keep the parent's lock (or a given-up wait's late lock) held for the child's life."""
    for fd in list(_lock_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _lock_fds.clear()
    _turn.depth = 0  # the forking thread's turn (if any) is the parent's, not ours


os.register_at_fork(after_in_child=_forget_inherited_locks)


def _close_lock(fd: int) -> None:
    _lock_fds.discard(fd)
    os.close(fd)  # releases the lock


class DatabaseBusy(RuntimeError):
    """A writer waited WRITE_WAIT_S for the writers' lock: one line for the user, nothing was written."""


def _take_turn(fd: int, wait_s: float) -> bool:
    """Take the writers' lock on fd within wait_s. The wait itself is a blocking flock on a helper thread, so
    waiting writers are woken by the kernel in turn (no polling); a helper that gets the lock after we gave up
    releases it at once and closes fd (the caller must then not close it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    got, gave_up, mutex = threading.Event(), threading.Event(), threading.Lock()

    def wait() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with mutex:
            if gave_up.is_set():
                _close_lock(fd)  # releases the lock we no longer want
            else:
                got.set()

    threading.Thread(target=wait, daemon=True, name="sqlite-writer-turn").start()
    if got.wait(wait_s):
        return True
    with mutex:
        if got.is_set():
            return True
        gave_up.set()
    return False


@contextmanager
def write_turn(url: str, wait_s: float | None = None) -> Iterator[None]:
    """On a SQLite file: hold the writers' file lock (re-entrant per thread) for the whole write transaction;
    DatabaseBusy after WRITE_WAIT_S of waiting."""
    path = _sqlite_file(url)
    if path is None or getattr(_turn, "depth", 0):
        _turn.depth = getattr(_turn, "depth", 0) + 1
        try:
            yield
        finally:
            _turn.depth -= 1
        return
    fd = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    _lock_fds.add(fd)
    wait_s = WRITE_WAIT_S if wait_s is None else wait_s
    if not _take_turn(fd, wait_s):
        raise DatabaseBusy(f"the database is busy: another write held it for {wait_s:.0f} s; nothing was written, "
                           "try again")
    try:
        _turn.depth = 1
        yield
    finally:
        _turn.depth = 0
        _close_lock(fd)


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
        if not readonly:
            s.commit()
        # a read ends at close(): its transaction is rolled back without expiring what it loaded, so rows read in
        # it stay usable after the block (a rollback() here would expire them: DetachedInstanceError later)
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()
