"""CLI plumbing: one JSON object on stdout with --json, a one-line error on stderr and a non-zero exit otherwise.

JSON output is strict: NaN and ±infinity (an undefined metric) are written as null, never as the non-JSON
literals NaN / Infinity that other parsers refuse."""
from __future__ import annotations

import json
import math
import numbers
import sys
from typing import Any, NoReturn

import typer

from services.jobs import lifecycle as jobs
from services.team.users import cli_user_id


def _clean(o: Any) -> Any:
    """A JSON-safe copy: non-finite numbers (Python or NumPy floats) become None, containers are copied."""
    if isinstance(o, numbers.Real) and not isinstance(o, numbers.Integral):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def emit(obj: dict, as_json: bool, human: str | None = None) -> None:
    """Print `obj`: one line of strict JSON with --json, else `human` (or indented JSON with null for NaN)."""
    if as_json:
        sys.stdout.write(json.dumps(_clean(obj), default=str, allow_nan=False) + "\n")
    else:
        typer.echo(human if human is not None else json.dumps(_clean(obj), indent=2, default=str, allow_nan=False))


def fail(msg: str, code: int = 1) -> NoReturn:
    line = " ".join(str(msg).split())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def run_job(kind: str, params: dict, as_json: bool, enqueue: bool = False) -> dict:
    """Run a job inline (progress on stderr) or put it on the queue, as the CLI's acting user (its role is
    checked like any write: docs/architecture.md, Identity); exit non-zero on failure."""
    try:
        uid = cli_user_id()
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
