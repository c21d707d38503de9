"""`exemplar audit list`: the audit trail (admins), filtered by user, action and time; JSON or escaped CSV."""
from __future__ import annotations

from pathlib import Path

import typer

from services.cli.common import emit, fail
from services.team.audit import to_csv
from services.team.audit_log import list_rows
from services.team.users import cli_user_id


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(help="The audit trail of every write.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("list")
    def list_(user: str = typer.Option(None, help="only this user's rows"),
              action: str = typer.Option(None, help="only actions starting with this (e.g. study., job.)"),
              since: str = typer.Option(None, help="ISO time, inclusive"),
              until: str = typer.Option(None, help="ISO time, inclusive"),
              limit: int = typer.Option(10000),
              csv: Path = typer.Option(None, "--csv", help="also write the rows as CSV (cells escaped)"),
              json_: bool = typer.Option(False, "--json")):
        """Audit rows, oldest first: user, role, action, object, at, before, after."""
        try:
            rows = list_rows(cli_user_id(), user=user, action=action, since=since, until=until, limit=limit)
        except ValueError as exc:
            fail(str(exc))
        if csv:
            csv.write_text(to_csv(rows), encoding="utf-8")
        emit({"rows": rows, "n": len(rows)}, json_,
             "\n".join(f"{r['at']}\t{r['user']}\t{r['role']}\t{r['action']}\t{r['object']}" for r in rows) or "no rows")
