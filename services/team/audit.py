"""The audit trail: every write appends who (name and role), when, action, object, before / after; never edited."""
from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime

from db.models import AuditRow, User
from services.platform.database import session

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _plain(v):
    """JSON-safe copy (NaN/inf → None) so before/after store on every engine."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def add(s, actor, action: str, obj: str, before=None, after=None) -> AuditRow:
    """Append a row in the caller's session (so it commits with the write). actor: user dict, id or None."""
    uid, name, role = None, "", ""
    if isinstance(actor, dict):
        uid, name, role = actor.get("id"), actor.get("name", ""), actor.get("role", "")
    elif actor is not None:
        u = s.get(User, int(actor))
        uid, name, role = int(actor), (u.name if u else ""), (u.role if u else "")
    row = AuditRow(user_id=uid, user_name=name or "", role=role or "", action=action, object=str(obj)[:200],
                   before=_plain(before), after=_plain(after))
    s.add(row)
    return row


def record(actor, action: str, obj: str, before=None, after=None) -> None:
    """Append a row in its own transaction (for writes that were committed elsewhere, e.g. a job's row)."""
    with session() as s:
        add(s, actor, action, obj, before, after)


def row_dict(r: AuditRow) -> dict:
    return {"id": r.id, "user": r.user_name, "user_id": r.user_id, "role": r.role, "action": r.action,
            "object": r.object, "at": r.at.isoformat() if r.at else None, "before": r.before, "after": r.after}


def csv_cell(v) -> str:
    """A CSV cell safe from formula injection: text starting with = + - @ (or tab / CR) gets a leading quote."""
    if v is None:
        return ""
    if isinstance(v, (bool, int, float)):
        return str(v)  # numbers are data, not formulas (-0.5 stays -0.5)
    if isinstance(v, (dict, list)):
        v = json.dumps(v, default=str)
    text = str(v)
    return "'" + text if text.startswith(FORMULA_START) else text


def to_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text with every cell escaped by csv_cell."""
    columns = columns or (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow([csv_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def to_json(rows: list[dict]) -> str:
    return json.dumps({"rows": _plain(rows)}, default=str, indent=1)
