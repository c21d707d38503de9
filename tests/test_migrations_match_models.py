"""The migrations build the schema the models describe: Alembic's autogenerate finds no difference after an upgrade."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db.engine import get_engine
from db.migrate import upgrade
from db.models import Base
from tests.helpers_pg import fresh_database, postgres_url  # noqa: F401


def _differences(url: str) -> list:
    upgrade(url)
    with get_engine(url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        conn.rollback()
    return diffs


def _show(diffs: list) -> str:
    return "the migrated database differs from db/models.py:\n" + "\n".join(f"  {d!r}" for d in diffs)


def test_sqlite_migrations_match_the_models(exemplar_home):
    diffs = _differences(f"sqlite:///{exemplar_home / 'exemplar.db'}")
    assert diffs == [], _show(diffs)


@pytest.mark.postgres
def test_postgres_migrations_match_the_models(postgres_url):  # noqa: F811
    diffs = _differences(fresh_database(postgres_url))
    assert diffs == [], _show(diffs)
