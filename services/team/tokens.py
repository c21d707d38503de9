"""Personal tokens: how the CLI proves who it is on a shared database (docs/architecture.md, Identity).

A token is shown once when made; the database keeps its SHA-256 (table `tokens`), so a token is found by its
digest (no comparison of secrets in Python) and a leaked database gives no usable token. Tokens are listed
without their value, revoked (never deleted) and every make / revoke writes an audit row.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select, update

from db.models import Token, User, utcnow
from services.platform.database import read_session, session

PREFIX = "exm_"
SHOWN = 12  # characters kept in clear (`prefix`) to tell tokens apart in a list
LAST_USED_EVERY = timedelta(seconds=60)  # last_used_at is written at most once a minute per token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(s, user_id: int, label: str, created_by: int | None, actor) -> tuple[Token, str]:
    """A new token row for `user_id` in the caller's session, audited as `actor`; returns (row, plain token)."""
    from services.team import audit

    plain = PREFIX + secrets.token_urlsafe(32)
    row = Token(user_id=int(user_id), digest=digest(plain), prefix=plain[:SHOWN], label=(label or "")[:200],
                created_by=created_by, created_at=utcnow())
    s.add(row)
    s.flush()
    owner = s.get(User, int(user_id))
    audit.add(s, actor, "token.create", f"token:{row.id}",
              after={"user": owner.name if owner else None, "prefix": row.prefix, "label": row.label})
    return row, plain


def create(actor_id: int | None, name: str, label: str = "") -> dict:
    """A new personal token for user `name` (admins only); the plain token is in the answer and nowhere else."""
    from services.team.roles import require

    actor = require(actor_id, "users.token")
    with session() as s:
        u = s.scalars(select(User).where(User.name == (name or "").strip())).first()
        if u is None:
            raise ValueError(f"no user {name!r}: create it first with `exemplar users add NAME --role ROLE`")
        row, plain = add_token(s, u.id, label, created_by=actor["id"], actor=actor)
        return {"token_id": row.id, "user": u.name, "prefix": row.prefix, "label": row.label, "token": plain}


def authenticate(token: str | None) -> int | None:
    """The user id a live (not revoked) token belongs to, else None. Looked up by digest in a read session;
    last_used_at is a separate short write, at most once a minute."""
    token = (token or "").strip()
    if not token:
        return None
    with read_session() as s:
        row = s.scalars(select(Token).where(Token.digest == digest(token))).first()
        if row is None or row.revoked_at is not None:
            return None
        tid, uid, last = row.id, row.user_id, row.last_used_at
    now = utcnow()
    if last is None or now - last >= LAST_USED_EVERY:
        with session() as s:
            s.execute(update(Token).where(Token.id == tid).values(last_used_at=now))
    return uid


def _iso(t) -> str | None:
    return t.isoformat() if t else None


def list_tokens(actor_id: int | None) -> list[dict]:
    """Every token without its value: id, prefix, label, user, who made it, created, last used, revoked."""
    from services.team.roles import require

    require(actor_id, "users.token")
    with read_session() as s:
        names = dict(s.execute(select(User.id, User.name)).all())
        rows = s.scalars(select(Token).order_by(Token.id)).all()
        return [{"id": r.id, "prefix": r.prefix, "label": r.label, "user": names.get(r.user_id),
                 "user_id": r.user_id, "created_by": names.get(r.created_by), "created_at": _iso(r.created_at),
                 "last_used_at": _iso(r.last_used_at), "revoked_at": _iso(r.revoked_at)} for r in rows]


def _live_admin_tokens(s) -> int:
    """How many unrevoked tokens admins hold (on a shared database, the only way an admin gets in)."""
    return int(s.scalar(select(func.count()).select_from(Token).join(User, User.id == Token.user_id)
                        .where(User.role == "admin", Token.revoked_at.is_(None))) or 0)


def revoke(actor_id: int | None, token_id: int) -> dict:
    """Revoke a token (admins only): it stops authenticating at once; the row stays, audited."""
    from services.team import audit
    from services.team.roles import require

    from services.team.users import shared_database

    actor = require(actor_id, "users.token")
    with session() as s:
        row = s.get(Token, int(token_id))
        if row is None:
            raise ValueError(f"no token {token_id}")
        if row.revoked_at is not None:
            raise ValueError(f"token {token_id} is already revoked (at {row.revoked_at.isoformat()})")
        owner = s.get(User, row.user_id)
        if shared_database() and owner is not None and owner.role == "admin" and _live_admin_tokens(s) <= 1:
            raise ValueError(f"token {token_id} is the last live token of any admin: revoking it would lock every "
                             "admin out (make another admin token first with `exemplar users token NAME`)")
        row.revoked_at = utcnow()
        audit.add(s, actor, "token.revoke", f"token:{row.id}", before={"revoked_at": None},
                  after={"revoked_at": row.revoked_at, "user": owner.name if owner else None, "prefix": row.prefix})
        return {"token_id": row.id, "user": owner.name if owner else None, "prefix": row.prefix,
                "revoked_at": row.revoked_at.isoformat()}
