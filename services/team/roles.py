"""Roles and the action table (the least role per action); the check itself is services.team.access.require.

No code path acts as "system": a write with no acting user is the process's own identity (`services.team.users.
process_user`: a token, the local user, or set-up mode on a shared database with no admin yet); migrations are
the only system action (docs/architecture.md, Identity)."""
from __future__ import annotations

from services.platform.job_kinds import JOB_KINDS

ROLES = ("reader", "researcher", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}

# action → the least role allowed to do it. A job kind's action is its name, with the role and the words of its spec
# in services.platform.job_kinds (written once there); the actions that are not jobs follow.
# Readers browse, pick, annotate, rate and answer studies.
ACTIONS: dict[str, str] = {
    **{k.name: k.role for k in JOB_KINDS},
    "pick": "reader", "annotate": "reader", "rate": "reader", "study.answer": "reader", "job.cancel.own": "reader",
    "export": "researcher", "study.create": "researcher", "study.adjudicate": "researcher",
    "study.read_results": "researcher", "model.import.code": "admin",
    "users.role": "admin", "users.token": "admin", "audit.read": "admin", "job.cancel.any": "admin",
}

WHAT = {  # words for the refusal message
    **{k.name: k.what for k in JOB_KINDS},
    "export": "export", "study.create": "create a study",
    "study.adjudicate": "adjudicate a study", "study.read_results": "see a study's answers and agreement",
    "model.import.code": "import a classifier built by Python code on the server (python:…)",
    "users.role": "assign roles",
    "users.token": "create, list or revoke personal tokens", "audit.read": "read the audit log",
    "job.cancel.any": "cancel another user's job or an ownerless one",
}

# `model.register` is an audit action only: a model is registered inside a use case whose own action was checked
# (train, exbl, gen.train, demo, model.import), never by a user directly (docs/architecture.md, Identity)


class PermissionRefused(PermissionError):
    """A role check failed; the message is one line naming the user's role and the role needed."""


def needed(action: str) -> str:
    """The least role for an action; any write not listed (a new job kind) needs a researcher."""
    return ACTIONS.get(action, "researcher")


def allowed(role: str, action: str) -> bool:
    return RANK.get(role, -1) >= RANK[needed(action)]
