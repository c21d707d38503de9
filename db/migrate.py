"""Apply Alembic migrations programmatically: `upgrade(url)` brings any database to head.

Simultaneous upgrades are safe: PostgreSQL serialises them on an advisory lock, SQLite on a file lock beside
the database; the loser finds the schema at head and does nothing. A database already at head costs one query.
"""
from __future__ import annotations

import fcntl
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import text

HERE = Path(__file__).parent
LOCK_KEY = 0x45584D50  # "EXMP": the advisory lock every `db upgrade` takes on PostgreSQL


def alembic_config(url: str):
    from alembic.config import Config  # imported only when migrating: a CLI call at head stays fast

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["url"] = url
    return cfg


_REV = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+)$", re.M)


@lru_cache(maxsize=1)
def head_revisions() -> tuple[str, ...]:
    """Heads of the migration graph, read from the version files' `revision` / `down_revision` lines."""
    revs, downs = set(), set()
    for f in (HERE / "migrations" / "versions").glob("*.py"):
        found = dict(_REV.findall(f.read_text()))
        if "revision" not in found:
            continue
        revs.add(found["revision"].strip().strip("'\""))
        downs.update(re.findall(r"['\"]([^'\"]+)['\"]", found.get("down_revision", "")))
    return tuple(sorted(revs - downs))


def _at_head(url: str) -> bool:
    from db.engine import get_engine

    try:
        with get_engine(url).connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            conn.rollback()
    except Exception:  # no version table yet (or no database): needs an upgrade
        return False
    return tuple(sorted(rows)) == head_revisions()


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the one migration lock for this database (advisory lock on PostgreSQL, flock on a SQLite file)."""
    from db.engine import get_engine

    if url.startswith("postgresql"):
        with get_engine(url).connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()
        return
    path = url.split("///", 1)[1] if url.startswith("sqlite") and "///" in url else ""
    if not path or path.startswith(":memory:"):
        yield
        return
    with open(f"{path}.migrate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head") -> None:
    if revision == "head" and _at_head(url):
        return
    from alembic import command

    with migration_lock(url):
        command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from db.engine import get_engine

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
