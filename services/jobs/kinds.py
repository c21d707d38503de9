"""The worker's lookups over the job kinds (services/platform/job_kinds.py, where each kind is written once):
handler entry points, retries and idempotence, by kind name."""
from __future__ import annotations

from typing import Callable

from core.registry import load
from services.platform.job_kinds import DEFAULT_MAX_RETRIES, JOB_KINDS  # noqa: F401  (re-exported)

# kind → "module:function" of its handler (imported by handler(), when a job of the kind runs)
HANDLERS: dict[str, str] = {k.name: k.handler for k in JOB_KINDS}


def known(kind: str) -> bool:
    return kind in JOB_KINDS


def handler(kind: str) -> Callable:
    """The handler function of a kind (imports its module: torch for most kinds)."""
    return load(JOB_KINDS.get(kind).handler)


def idempotent(kind: str) -> bool:
    return kind in JOB_KINDS and JOB_KINDS.get(kind).idempotent


def max_retries_for(kind: str) -> int:
    return JOB_KINDS.get(kind).max_retries if kind in JOB_KINDS else DEFAULT_MAX_RETRIES
