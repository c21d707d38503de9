"""The project's database for the current settings: session() for writes, read_session() for reads that never
wait, ensure_schema() (Alembic upgrade, once per URL and process)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy.orm import Session

from db.engine import session_scope
from db.migrate import upgrade
from services.platform.settings import get_settings

_done: set[str] = set()
_lock = threading.Lock()


def ensure_schema(url: str | None = None) -> str:
    """Apply migrations once per process and URL (a quick revision check when already at head); returns the URL."""
    url = url or get_settings().db_url
    with _lock:
        if url not in _done:
            upgrade(url)
            _done.add(url)
    return url


@contextmanager
def session() -> Iterator[Session]:
    """A committed-on-exit write session on the migrated database of the current settings."""
    with session_scope(ensure_schema()) as s:
        yield s


@contextmanager
def read_session() -> Iterator[Session]:
    """A read-only session: on SQLite a deferred transaction that never waits behind a writer (WAL)."""
    with session_scope(ensure_schema(), readonly=True) as s:
        yield s
