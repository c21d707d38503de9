"""Who may do what, checked on the server: `require(user_id, action)` returns the acting user or raises
PermissionRefused; `require_cancel` for jobs; `set_role`, by which admins grant roles. The role names and the action
table are in `roles.py` (docs/architecture.md, Identity).

No code path acts as "system": user_id None is the process's own identity (`services.team.users.process_user`: a
token, the local user, or set-up mode on a shared database with no admin yet); migrations are the only system
action."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from sqlalchemy import select

from db.models import Job, User
from services.platform.database import read_session, session
from services.team import audit
from services.team.roles import ROLES, WHAT, PermissionRefused, allowed, needed
from services.team.users import check_name, get_user, process_user, user_dict


def require(user_id: int | None, action: str) -> dict:
    """The acting user ({'id', 'name', 'role'}) when their role allows `action`; else PermissionRefused.

    user_id None means the process's own identity (`services.team.users.process_user`: the CLI's token or local user,
    set-up mode on a shared database with no admin yet; a refusal naming EXEMPLAR_TOKEN otherwise)."""
    user = process_user() if user_id is None else get_user(int(user_id))
    if user is None:
        raise ValueError(f"no user {user_id}: every write needs a known user")
    if user["id"] is None and action.startswith("users."):  # set-up mode grants no roles and no tokens
        raise PermissionRefused("this database has no admin yet: run `exemplar users bootstrap-admin NAME` first")
    if not allowed(user["role"], action):
        need = needed(action)
        who = "an admin" if need == "admin" else "a researcher or an admin"
        raise PermissionRefused(f"not allowed: user {user['name']} has role {user['role']}; "
                                f"to {WHAT.get(action, action)} needs {who}")
    return user


_JOB: ContextVar[int | None] = ContextVar("exemplar_running_job", default=None)


@contextmanager
def running_job(job_id: int) -> Iterator[None]:
    """Marks the body of job `job_id` (services.jobs.lifecycle.execute_job): its kind's role was checked when the job
    was created, and it runs as the job's owner (no one for a job admitted in set-up mode)."""
    token = _JOB.set(int(job_id))
    try:
        yield
    finally:
        _JOB.reset(token)


def check_use_case(user_id: int | None, action: str) -> dict | None:
    """The role check of a use case that is also a job's body: called directly (a page, the CLI, a bench, a test)
    it is require(user_id, action); inside a running job it passes (None), because create_job checked the kind's
    role when the job was submitted (docs/architecture.md, Identity)."""
    if _JOB.get() is not None:
        return None
    return require(user_id, action)


def may_cancel(user: dict, job: dict) -> bool:
    """Whether `user` ({'id', 'role'}) may cancel `job` (a job row): the same rule as require_cancel, without a
    query, so a page shows Cancel only where it would be accepted."""
    own = job.get("created_by") is not None and job.get("created_by") == user["id"]
    return allowed(user["role"], "job.cancel.own" if own else "job.cancel.any")


def require_cancel(job_id: int, user_id: int | None) -> dict:
    """Everyone may cancel their own jobs; cancelling another user's job, or an ownerless one (created by the
    process identity in set-up mode), needs an admin."""
    uid = process_user()["id"] if user_id is None else int(user_id)
    with read_session() as s:
        job = s.get(Job, int(job_id))
        own = job is None or (job.created_by is not None and job.created_by == uid)
    return require(uid, "job.cancel.own" if own else "job.cancel.any")


def set_role(actor_id: int | None, name: str, role: str) -> dict:
    """Create user `name` or change its role (admins only); audited with before / after."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    actor = require(actor_id, "users.role")
    name = check_name(name)
    with session() as s:
        u = s.scalars(select(User).where(User.name == name)).first()
        before = {"role": u.role} if u else None
        if u is None:
            u = User(name=name, role=role)
            s.add(u)
        u.role = role
        s.flush()
        audit.add(s, actor, "user.role", f"user:{name}", before=before, after={"role": role})
        return user_dict(u)
