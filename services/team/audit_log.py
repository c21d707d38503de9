"""The admin's read of the audit trail: rows filtered by user, action and time (docs/architecture.md, Identity)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from db.models import AuditRow
from services.platform.database import read_session
from services.team.access import require
from services.team.audit import row_dict


def list_rows(actor_id: int | None = None, user: str | None = None, action: str | None = None,
              since: str | None = None, until: str | None = None, limit: int | None = 10000) -> list[dict]:
    """Audit rows, oldest first, filtered by user name, action (prefix) and ISO time bounds. Admins only."""
    require(actor_id, "audit.read")
    with read_session() as s:
        q = select(AuditRow).order_by(AuditRow.id)
        if user:
            q = q.where(AuditRow.user_name == user)
        if action:
            q = q.where(AuditRow.action.startswith(action))
        if since:
            q = q.where(AuditRow.at >= datetime.fromisoformat(since))
        if until:
            q = q.where(AuditRow.at <= datetime.fromisoformat(until))
        if limit:
            q = q.limit(limit)
        return [row_dict(r) for r in s.scalars(q)]
