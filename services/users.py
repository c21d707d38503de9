"""Identity and roles: users with a role (reader, researcher, admin), the CLI's user, the sign-in mode switch.

Admins are named by EXEMPLAR_ADMINS (names or e-mails, comma-separated) or are the first user. In local mode
(no sign-in configured) a name the database does not know yet is created as an admin: everyone on the one
machine is trusted. With sign-in configured, a new identity is a reader until an admin gives it a role.
"""
from __future__ import annotations

import getpass
import os
import tomllib
from pathlib import Path

from sqlalchemy import func, select

from db.models import User
from services.database import session

ROOT = Path(__file__).resolve().parents[1]
AUTH_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def secrets_paths() -> list[Path]:
    """Where Streamlit reads secrets when `exemplar serve` starts it (project root, then the home folder)."""
    return [ROOT / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"]


def auth_config() -> dict | None:
    """The [auth] section of the first secrets.toml that has a complete OIDC configuration, else None."""
    for p in secrets_paths():
        try:
            auth = tomllib.loads(p.read_text()).get("auth")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if not isinstance(auth, dict) or not all(auth.get(k) for k in AUTH_KEYS):
            continue
        providers = [auth] + [v for v in auth.values() if isinstance(v, dict)]
        if any(all(pr.get(k) for k in PROVIDER_KEYS) for pr in providers):
            return auth
    return None


def signin_configured() -> bool:
    """Sign-in mode: an OIDC provider is configured in .streamlit/secrets.toml [auth]."""
    return auth_config() is not None


def admin_names() -> set[str]:
    return {n.strip().lower() for n in os.environ.get("EXEMPLAR_ADMINS", "").split(",") if n.strip()}


def _named_admin(name: str, email: str | None) -> bool:
    admins = admin_names()
    return name.lower() in admins or bool(email and email.lower() in admins)


def _user_dict(u: User) -> dict:
    role = "admin" if _named_admin(u.name, u.email) else (u.role or "reader")
    return {"id": u.id, "name": u.name, "role": role, "email": u.email,
            "created_at": u.created_at.isoformat() if u.created_at else None}


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValueError("a user name must not be empty")
    if len(name) > 120:
        raise ValueError("a user name must be at most 120 characters")
    return name


def get_or_create_user(name: str, email: str | None = None) -> int:
    """The id of user `name`, created on first use (admin when first, named in EXEMPLAR_ADMINS or in local mode)."""
    from services import audit

    name = _check_name(name)
    with session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        if u is None:
            first = (s.scalar(select(func.count(User.id))) or 0) == 0
            admin = first or _named_admin(name, email) or not signin_configured()
            u = User(name=name, email=email, role="admin" if admin else "reader")
            s.add(u)
            s.flush()
            audit.add(s, {"id": u.id, "name": u.name, "role": u.role}, "user.create", f"user:{u.name}",
                      after={"role": u.role})
        return u.id


def get_user(user_id: int) -> dict | None:
    with session() as s:
        u = s.get(User, int(user_id))
        return _user_dict(u) if u else None


def find_user(name: str) -> dict | None:
    with session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        return _user_dict(u) if u else None


def set_role(actor_id: int | None, name: str, role: str) -> dict:
    """Create user `name` or change its role (admins only); audited with before / after."""
    from services import audit
    from services.roles import ROLES, require

    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    actor = require(actor_id, "users.role")
    name = _check_name(name)
    with session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        before = {"role": u.role} if u else None
        if u is None:
            u = User(name=name, role=role)
            s.add(u)
        u.role = role
        s.flush()
        audit.add(s, actor, "user.role", f"user:{name}", before=before, after={"role": role})
        return _user_dict(u)


def cli_user_id() -> int:
    """The CLI's user: EXEMPLAR_USER, else the OS login name."""
    try:
        default = getpass.getuser()
    except Exception:  # no login name in some containers
        default = "cli"
    return get_or_create_user(os.environ.get("EXEMPLAR_USER") or default)


def list_users() -> list[dict]:
    with session() as s:
        return [_user_dict(u) for u in s.scalars(select(User).order_by(User.name))]


def is_loopback(address: str) -> bool:
    import ipaddress

    a = (address or "").strip().strip("[]")
    if a == "localhost":
        return True
    try:
        return ipaddress.ip_address(a).is_loopback
    except ValueError:
        return False


def serve_refusal(address: str, insecure_no_auth: bool = False) -> str | None:
    """Why the app must not listen on `address` (a non-loopback bind without sign-in), or None when it may."""
    if is_loopback(address) or insecure_no_auth or signin_configured():
        return None
    return (f"refusing to serve on {address} without sign-in: local mode has no sign-in and binds to loopback only; "
            "configure an OpenID Connect provider in .streamlit/secrets.toml [auth] (see README) "
            "or pass --insecure-no-auth")
