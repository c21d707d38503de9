"""Token rows: make one (digest and prefix stored, the value shown once), and find the user a token belongs to.
The admin's use cases over them (make for a user, list, revoke) are in `tokens.py` (docs/architecture.md,
Identity)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select, update

from db.models import Token, User, utcnow
from services.platform.database import read_session, session
from services.team import audit

PREFIX = "exm_"
SHOWN = 12  # characters kept in clear (`prefix`) to tell tokens apart in a list
LAST_USED_EVERY = timedelta(seconds=60)  # last_used_at is written at most once a minute per token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(s, user_id: int, label: str, created_by: int | None, actor) -> tuple[Token, str]:
    """A new token row for `user_id` in the caller's session, audited as `actor`; returns (row, plain token)."""
    plain = PREFIX + secrets.token_urlsafe(32)
    row = Token(user_id=int(user_id), digest=digest(plain), prefix=plain[:SHOWN], label=(label or "")[:200],
                created_by=created_by, created_at=utcnow())
    s.add(row)
    s.flush()
    owner = s.get(User, int(user_id))
    audit.add(s, actor, "token.create", f"token:{row.id}",
              after={"user": owner.name if owner else None, "prefix": row.prefix, "label": row.label})
    return row, plain


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


def live_admin_tokens(s) -> int:
    """How many unrevoked tokens admins hold (on a shared database, the only way an admin gets in)."""
    return int(s.scalar(select(func.count()).select_from(Token).join(User, User.id == Token.user_id)
                        .where(User.role == "admin", Token.revoked_at.is_(None))) or 0)
