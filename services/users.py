"""Identity: one current-user helper for the CLI and pages; every write records this user's id."""
from __future__ import annotations

import getpass
import os

from sqlalchemy import select

from db.models import User
from services.database import session


def get_or_create_user(name: str) -> int:
    name = (name or "").strip()
    if not name:
        raise ValueError("a user name must not be empty")
    if len(name) > 120:
        raise ValueError("a user name must be at most 120 characters")
    with session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        if u is None:
            u = User(name=name)
            s.add(u)
            s.flush()
        return u.id


def cli_user_id() -> int:
    """The CLI's user: EXEMPLAR_USER, else the OS login name."""
    try:
        default = getpass.getuser()
    except Exception:  # no login name in some containers
        default = "cli"
    return get_or_create_user(os.environ.get("EXEMPLAR_USER") or default)


def list_users() -> list[dict]:
    with session() as s:
        return [{"id": u.id, "name": u.name} for u in s.scalars(select(User).order_by(User.name))]
