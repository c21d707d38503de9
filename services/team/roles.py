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
    "study.adjudicate": "researcher", "study.read_results": "researcher",
    "model.import": "researcher", "model.export": "researcher", "model.import.code": "admin",
    "users.role": "admin", "users.token": "admin", "audit.read": "admin", "job.cancel.any": "admin",
}

WHAT = {  # words for the refusal message
    "train": "start a training job", "data.import": "import data", "data.synth": "build a dataset",
    "explain": "run explanations", "exbl": "start a retrain", "gen.train": "train a generator",
    "counterfactual": "generate counterfactuals", "ltx.train": "train an LTX explainer", "evaluate": "run an evaluation",
    "demo": "build the demo", "export": "export", "study.create": "create a study",
    "study.adjudicate": "adjudicate a study", "study.read_results": "see a study's answers and agreement",
    "model.import": "import a classifier",
    "model.import.code": "import a classifier built by Python code on the server (python:…)",
    "model.export": "export a classifier", "users.role": "assign roles",
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
