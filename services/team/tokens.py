"""Personal tokens: how the CLI proves who it is on a shared database (docs/architecture.md, Identity).

A token is shown once when made; the database keeps its SHA-256 (table `tokens`), so a token is found by its
digest (no comparison of secrets in Python) and a leaked database gives no usable token. Tokens are listed
without their value, revoked (never deleted) and every make / revoke writes an audit row.
"""
from __future__ import annotations

from sqlalchemy import select

from db.models import Token, User, utcnow
from services.platform.database import read_session, session
from services.team import audit
from services.team.access import require
from services.team.token_store import add_token, live_admin_tokens
from services.team.users import shared_database


def create(actor_id: int | None, name: str, label: str = "") -> dict:
    """A new personal token for user `name` (admins only); the plain token is in the answer and nowhere else."""

    actor = require(actor_id, "users.token")
    with session() as s:
        u = s.scalars(select(User).where(User.name == (name or "").strip())).first()
        if u is None:
            raise ValueError(f"no user {name!r}: create it first with `exemplar users add NAME --role ROLE`")
        row, plain = add_token(s, u.id, label, created_by=actor["id"], actor=actor)
        return {"token_id": row.id, "user": u.name, "prefix": row.prefix, "label": row.label, "token": plain}


def _iso(t) -> str | None:
    return t.isoformat() if t else None


def list_tokens(actor_id: int | None) -> list[dict]:
    """Every token without its value: id, prefix, label, user, who made it, created, last used, revoked."""
    require(actor_id, "users.token")
    with read_session() as s:
        names = dict(s.execute(select(User.id, User.name)).all())
        rows = s.scalars(select(Token).order_by(Token.id)).all()
        return [{"id": r.id, "prefix": r.prefix, "label": r.label, "user": names.get(r.user_id),
                 "user_id": r.user_id, "created_by": names.get(r.created_by), "created_at": _iso(r.created_at),
                 "last_used_at": _iso(r.last_used_at), "revoked_at": _iso(r.revoked_at)} for r in rows]


def revoke(actor_id: int | None, token_id: int) -> dict:
    """Revoke a token (admins only): it stops authenticating at once; the row stays, audited."""


    actor = require(actor_id, "users.token")
    with session() as s:
        row = s.get(Token, int(token_id))
        if row is None:
            raise ValueError(f"no token {token_id}")
        if row.revoked_at is not None:
            raise ValueError(f"token {token_id} is already revoked (at {row.revoked_at.isoformat()})")
        owner = s.get(User, row.user_id)
        if shared_database() and owner is not None and owner.role == "admin" and live_admin_tokens(s) <= 1:
            raise ValueError(f"token {token_id} is the last live token of any admin: revoking it would lock every "
                             "admin out (make another admin token first with `exemplar users token NAME`)")
        row.revoked_at = utcnow()
        audit.add(s, actor, "token.revoke", f"token:{row.id}", before={"revoked_at": None},
                  after={"revoked_at": row.revoked_at, "user": owner.name if owner else None, "prefix": row.prefix})
        return {"token_id": row.id, "user": owner.name if owner else None, "prefix": row.prefix,
                "revoked_at": row.revoked_at.isoformat()}
