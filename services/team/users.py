"""Identity and roles: users with a role (reader, researcher, admin), the process's acting user, the sign-in
mode switch (docs/architecture.md, Identity).

Local mode (a SQLite file, no sign-in): one person on one machine; the CLI acts as EXEMPLAR_USER (else the login
name), created as an admin on first use, and EXEMPLAR_ADMINS names more admins. A shared database (any URL that
is not SQLite): the CLI acts only through a personal token (EXEMPLAR_TOKEN); EXEMPLAR_USER and EXEMPLAR_ADMINS
are ignored, the database's roles are the truth. Until the database has an admin it is in set-up mode: a call
without a token acts as an unauthenticated set-up identity that creates no user row. With sign-in configured, a
new identity is a reader until an admin gives it a role.
"""
from __future__ import annotations

import getpass
import os
import sys
import tomllib
from pathlib import Path

from sqlalchemy import func, select, text

from db.models import User
from services.platform.database import read_session, session
from services.team import audit, token_store
from services.team.roles import PermissionRefused
from services.platform.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
AUTH_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
# The identity of a CLI call (or an ownerless job) on a shared database that has no admin yet: no user row.
SETUP = {"id": None, "name": "set-up", "role": "admin"}
SETUP_NOTICE = ("this database has no admin yet: acting unauthenticated; "
                "run `exemplar users bootstrap-admin NAME` to require tokens")
NEED_TOKEN = ("this database has an admin: the CLI acts only through a personal token; set EXEMPLAR_TOKEN "
              "(an admin creates one with `exemplar users token NAME`)")
BAD_TOKEN = "EXEMPLAR_TOKEN is not a valid token (unknown or revoked): ask an admin for a new one"
_said: set[str] = set()


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


def shared_database() -> bool:
    """A database that is not a local SQLite file (PostgreSQL …): identity by token only."""
    return not get_settings().db_url.startswith("sqlite")


def _say_once(line: str) -> None:
    """One line on stderr, once per process (the CLI's notices about identity)."""
    if line not in _said:
        _said.add(line)
        sys.stderr.write(line + "\n")


def _note_ignored_env() -> None:
    """On a shared database, say in one line that EXEMPLAR_USER / EXEMPLAR_ADMINS are set but ignored."""
    names = [k for k in ("EXEMPLAR_USER", "EXEMPLAR_ADMINS") if os.environ.get(k)]
    if names:
        _say_once(f"{' and '.join(names)} ignored: on a shared database the CLI acts only through EXEMPLAR_TOKEN")


def admin_names() -> set[str]:
    """EXEMPLAR_ADMINS (local mode only: on a shared database the database's roles are the truth)."""
    if shared_database():
        _note_ignored_env()
        return set()
    return {n.strip().lower() for n in os.environ.get("EXEMPLAR_ADMINS", "").split(",") if n.strip()}


def _named_admin(name: str, email: str | None) -> bool:
    admins = admin_names()
    return name.lower() in admins or bool(email and email.lower() in admins)


def user_dict(u: User) -> dict:
    role = "admin" if _named_admin(u.name, u.email) else (u.role or "reader")
    return {"id": u.id, "name": u.name, "role": role, "email": u.email,
            "created_at": u.created_at.isoformat() if u.created_at else None}


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValueError("a user name must not be empty")
    if len(name) > 120:
        raise ValueError("a user name must be at most 120 characters")
    return name


def _new_role(s, name: str, email: str | None, signed_in: bool = False) -> str:
    """A new user's role: on a shared database a reader (admins come from bootstrap-admin and admins); an
    identity from the sign-in provider a reader unless named in EXEMPLAR_ADMINS (whatever way Streamlit found its
    [auth] secrets); locally an admin when first, named in EXEMPLAR_ADMINS or in local mode (no sign-in)."""
    if shared_database():
        return "reader"
    if signed_in:
        return "admin" if _named_admin(name, email) else "reader"
    first = (s.scalar(select(func.count(User.id))) or 0) == 0
    return "admin" if first or _named_admin(name, email) or not signin_configured() else "reader"


def get_or_create_user(name: str, email: str | None = None, signed_in: bool = False) -> int:
    """The id of user `name`, created on first use (its role: `_new_role`; signed_in: the identity came from the
    app's sign-in provider); a known name takes no write lock."""
    name = check_name(name)
    with read_session() as s:
        known = s.scalar(select(User.id).where(User.name == name))
    if known is not None:
        return known
    with session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        if u is None:
            u = User(name=name, email=email, role=_new_role(s, name, email, signed_in))
            s.add(u)
            s.flush()
            audit.add(s, {"id": u.id, "name": u.name, "role": u.role}, "user.create", f"user:{u.name}",
                      after={"role": u.role})
        return u.id


def get_user(user_id: int | None) -> dict | None:
    if user_id is None:
        return None
    with read_session() as s:
        u = s.get(User, int(user_id))
        return user_dict(u) if u else None


def find_user(name: str) -> dict | None:
    with read_session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        return user_dict(u) if u else None


def has_admin() -> bool:
    """Whether any user has the admin role in the database (EXEMPLAR_ADMINS does not count)."""
    with read_session() as s:
        return s.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None


def _lock_users(s) -> None:
    """Serialise bootstrap-admin: PostgreSQL locks the users table (SQLite's write session is already exclusive)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))


def bootstrap_admin(name: str, label: str = "bootstrap-admin") -> dict:
    """The database's first admin (created or promoted) and a personal token for them, shown once; allowed only
    while the database has no admin. Audited as the set-up identity."""
    name = check_name(name)
    with session() as s:
        _lock_users(s)
        if s.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None:
            raise PermissionRefused("this database has an admin already: bootstrap-admin only sets up a database "
                                    "with none; an admin creates tokens with `exemplar users token NAME`")
        u = s.scalars(select(User).where(User.name == name)).first()
        before = {"role": u.role} if u else None
        if u is None:
            u = User(name=name, role="admin")
            s.add(u)
        u.role = "admin"
        s.flush()
        audit.add(s, SETUP, "user.bootstrap_admin", f"user:{name}", before=before, after={"role": "admin"})
        row, plain = token_store.add_token(s, u.id, label, created_by=None, actor=SETUP)
        return {"id": u.id, "name": name, "role": "admin", "token": plain, "token_id": row.id,
                "prefix": row.prefix}


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "cli"


def _token_user(token: str) -> dict:
    user = get_user(token_store.authenticate(token))
    if user is None:
        raise PermissionRefused(BAD_TOKEN)
    return user


def process_user() -> dict:
    """The acting identity of this process ({'id', 'name', 'role'}): the CLI, and a job with no owner in the
    worker. EXEMPLAR_TOKEN wins everywhere; on a shared database it is the only way in once an admin exists
    (before that: SETUP, no user row); locally EXEMPLAR_USER, else the login name (docs/architecture.md, Identity)."""
    token = os.environ.get("EXEMPLAR_TOKEN", "").strip()
    shared = shared_database()
    if not shared and token and os.environ.get("EXEMPLAR_USER"):
        _say_once("EXEMPLAR_USER ignored: EXEMPLAR_TOKEN is set and wins")
    # on a shared database the notes come after the database answered: an unreachable one is one error line
    if token:
        user = _token_user(token)
    elif shared:
        admin = has_admin()
        _note_ignored_env()
        if admin:
            raise PermissionRefused(NEED_TOKEN)
        _say_once(SETUP_NOTICE)
        return dict(SETUP)
    else:
        user = get_user(get_or_create_user(os.environ.get("EXEMPLAR_USER") or _login_name()))
    if shared:
        _note_ignored_env()
    return {"id": user["id"], "name": user["name"], "role": user["role"]}


def cli_user_id() -> int | None:
    """The id of the process's acting user (`process_user`); None in set-up mode (no user row)."""
    return process_user()["id"]


def list_users() -> list[dict]:
    with read_session() as s:
        return [user_dict(u) for u in s.scalars(select(User).order_by(User.name))]


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
