"""Roles and the one server-side check: `require(user_id, action)` returns the acting user or raises PermissionRefused."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

ROLES = ("reader", "researcher", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}

# action → the least role allowed to do it (readers browse, pick, annotate, rate and answer studies)
ACTIONS: dict[str, str] = {
    "pick": "reader", "annotate": "reader", "rate": "reader", "study.answer": "reader", "job.cancel.own": "reader",
    "data.import": "researcher", "data.synth": "researcher", "train": "researcher", "explain": "researcher",
    "exbl": "researcher", "gen.train": "researcher", "counterfactual": "researcher", "ltx.train": "researcher",
    "evaluate": "researcher", "demo": "researcher", "export": "researcher", "study.create": "researcher",
    "study.adjudicate": "researcher", "study.read_results": "researcher", "model.register": "researcher",
    "model.import": "researcher", "model.export": "researcher", "model.import.code": "admin",
    "users.role": "admin", "audit.read": "admin", "job.cancel.any": "admin",
}

WHAT = {  # words for the refusal message
    "train": "start a training job", "data.import": "import data", "data.synth": "build a dataset",
    "explain": "run explanations", "exbl": "start a retrain", "gen.train": "train a generator",
    "counterfactual": "generate counterfactuals", "ltx.train": "train an LTX explainer", "evaluate": "run an evaluation",
    "demo": "build the demo", "export": "export", "study.create": "create a study",
    "study.adjudicate": "adjudicate a study", "study.read_results": "see a study's answers and agreement",
    "model.register": "register a model", "model.import": "import a classifier",
    "model.import.code": "import a classifier built by Python code on the server (python:…)",
    "model.export": "export a classifier", "users.role": "assign roles", "audit.read": "read the audit log",
    "job.cancel.any": "cancel another user's job",
}


# The demo build is a set-up step, not a person's write: it runs "as system" so it leaves no user behind
# (no login name such as "root" in the user picker). Only code paths that enter as_system() get it.
SYSTEM = {"id": None, "name": "system", "role": "admin"}
_as_system: ContextVar[bool] = ContextVar("exemplar_as_system", default=False)


@contextmanager
def as_system():
    """Within this block, a write with no acting user (user_id None) acts as the system (the demo build)."""
    token = _as_system.set(True)
    try:
        yield SYSTEM
    finally:
        _as_system.reset(token)


class PermissionRefused(PermissionError):
    """A role check failed; the message is one line naming the user's role and the role needed."""


def needed(action: str) -> str:
    """The least role for an action; any write not listed (a new job kind) needs a researcher."""
    return ACTIONS.get(action, "researcher")


def allowed(role: str, action: str) -> bool:
    return RANK.get(role, -1) >= RANK[needed(action)]


def require(user_id: int | None, action: str) -> dict:
    """The acting user ({'id', 'name', 'role'}) when their role allows `action`; else PermissionRefused.

    user_id None means the process's own identity (EXEMPLAR_USER for the CLI and the worker's inline runs)."""
    from services.users import cli_user_id, get_user

    if user_id is None and _as_system.get():
        return dict(SYSTEM)
    user = get_user(cli_user_id() if user_id is None else int(user_id))
    if user is None:
        raise ValueError(f"no user {user_id}: every write needs a known user")
    if not allowed(user["role"], action):
        need = needed(action)
        who = "an admin" if need == "admin" else "a researcher or an admin"
        raise PermissionRefused(f"not allowed: user {user['name']} has role {user['role']}; "
                                f"to {WHAT.get(action, action)} needs {who}")
    return user


def require_cancel(job_id: int, user_id: int | None) -> dict:
    """Everyone may cancel their own jobs; cancelling another user's job needs an admin."""
    from db.models import Job
    from services.database import session
    from services.users import cli_user_id

    uid = cli_user_id() if user_id is None else int(user_id)
    with session() as s:
        job = s.get(Job, int(job_id))
        owner = job.created_by if job is not None else None
    return require(uid, "job.cancel.own" if owner in (None, uid) else "job.cancel.any")
