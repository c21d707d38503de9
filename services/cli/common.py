"""CLI plumbing: one JSON object on stdout with --json, a one-line error on stderr and a non-zero exit otherwise."""
from __future__ import annotations

import json
import math
import sys
from typing import Any, NoReturn

import typer


def _clean(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None if math.isinf(o) else float("nan")
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def emit(obj: dict, as_json: bool, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_clean(obj), default=str) + "\n")
    else:
        typer.echo(human if human is not None else json.dumps(_clean(obj), indent=2, default=str))


def fail(msg: str, code: int = 1) -> NoReturn:
    line = " ".join(str(msg).split())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def run_job(kind: str, params: dict, as_json: bool, enqueue: bool = False, anonymous: bool = False) -> dict:
    """Run a job inline (progress on stderr) or put it on the queue; exit non-zero on failure.
    anonymous: record no user (the demo build must not leave a login name such as "root" in the user picker)."""
    from services import jobs
    from services.users import cli_user_id

    from contextlib import nullcontext

    from services.roles import as_system

    try:
        uid = None if anonymous else cli_user_id()
        with as_system() if anonymous else nullcontext():
            if enqueue:
                jid = jobs.submit(kind, params, uid)
                emit({"job_id": jid, "status": "queued"}, as_json)
                raise typer.Exit(0)
            row = jobs.run_inline(kind, params, uid, echo=True)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    if row["status"] != "succeeded":
        fail(f"job {row['id']} {row['status']}: {row['error']}")
    return row["result"] or {}
