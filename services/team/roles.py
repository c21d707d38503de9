"""Roles and the one server-side check: `require(user_id, action)` returns the acting user or raises PermissionRefused.

No code path acts as "system": a write with no acting user is the process's own identity (`services.team.users.
process_user`: a token, the local user, or set-up mode on a shared database with no admin yet); migrations are
the only system action (docs/architecture.md, Identity)."""
from __future__ import annotations

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
    "users.role": "admin", "users.token": "admin", "audit.read": "admin", "job.cancel.any": "admin",
}

WHAT = {  # words for the refusal message
    "train": "start a training job", "data.import": "import data", "data.synth": "build a dataset",
    "explain": "run explanations", "exbl": "start a retrain", "gen.train": "train a generator",
    "counterfactual": "generate counterfactuals", "ltx.train": "train an LTX explainer", "evaluate": "run an evaluation",
    "demo": "build the demo", "export": "export", "study.create": "create a study",
    "study.adjudicate": "adjudicate a study", "study.read_results": "see a study's answers and agreement",
    "model.register": "register a model", "model.import": "import a classifier",
    "model.import.code": "import a classifier built by Python code on the server (python:…)",
    "model.export": "export a classifier", "users.role": "assign roles",
    "users.token": "create, list or revoke personal tokens", "audit.read": "read the audit log",
    "job.cancel.any": "cancel another user's job",
}


class PermissionRefused(PermissionError):
    """A role check failed; the message is one line naming the user's role and the role needed."""


def needed(action: str) -> str:
    """The least role for an action; any write not listed (a new job kind) needs a researcher."""
    return ACTIONS.get(action, "researcher")


def allowed(role: str, action: str) -> bool:
    return RANK.get(role, -1) >= RANK[needed(action)]


def require(user_id: int | None, action: str) -> dict:
    """The acting user ({'id', 'name', 'role'}) when their role allows `action`; else PermissionRefused.

    user_id None means the process's own identity (`services.team.users.process_user`: the CLI's token or local user,
    set-up mode on a shared database with no admin yet; a refusal naming EXEMPLAR_TOKEN otherwise)."""
    from services.team.users import get_user, process_user

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


def require_cancel(job_id: int, user_id: int | None) -> dict:
    """Everyone may cancel their own jobs; cancelling another user's job (or an ownerless one, from set-up mode)
    needs an admin."""
    from db.models import Job
    from services.platform.database import read_session
    from services.team.users import process_user

    uid = process_user()["id"] if user_id is None else int(user_id)
    with read_session() as s:
        job = s.get(Job, int(job_id))
        own = job is None or job.created_by == uid
    return require(uid, "job.cancel.own" if own else "job.cancel.any")
