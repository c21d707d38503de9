"""paths relative to EXEMPLAR_HOME (issue 17)

Stored paths under EXEMPLAR_HOME (dataset roots, checkpoints, explanation maps, counterfactual results) become
relative to it, so a moved home or a host that mounts it elsewhere keeps working (docs/architecture.md, Paths). Paths
outside the home (an imported folder's original place, the shipped assets) stay absolute. Data only, no schema change.

Revision ID: 0006_paths
Revises: 0001
"""
import os
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = '0006_paths'
down_revision = '0003_team'
branch_labels = None
depends_on = None

COLUMNS = (("datasets", "root"), ("models", "checkpoint"), ("explanation_runs", "maps_path"),
           ("counterfactuals", "result_path"))


def _home() -> Path:
    return Path(os.environ.get("EXEMPLAR_HOME", "var")).expanduser().resolve()


def _relative(value: str, homes: tuple[Path, ...]) -> str | None:
    p = Path(value)
    if not p.is_absolute():
        return None
    for h in homes:
        try:
            return p.relative_to(h).as_posix()
        except ValueError:
            continue
    return None


def _rewrite(convert) -> None:
    conn = op.get_bind()
    for table, col in COLUMNS:
        t = sa.table(table, sa.column("id", sa.Integer), sa.column(col, sa.Text))
        for rid, value in conn.execute(sa.select(t.c.id, t.c[col])).all():
            new = convert(value) if value else None
            if new is not None and new != value:
                conn.execute(sa.update(t).where(t.c.id == rid).values({col: new}))


def upgrade() -> None:
    home = _home()
    homes = (home, Path(os.path.abspath(os.environ.get("EXEMPLAR_HOME", "var"))))
    _rewrite(lambda v: _relative(v, homes))


def downgrade() -> None:
    home = _home()
    _rewrite(lambda v: None if Path(v).is_absolute() else str(home / v))
