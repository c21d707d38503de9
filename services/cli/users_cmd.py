"""`exemplar users add NAME --role R`, `exemplar users list`: accounts and roles (roles are set by admins)."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail


def register(app: typer.Typer) -> None:
    users_app = typer.Typer(help="Users and roles (reader, researcher, admin).", no_args_is_help=True)
    app.add_typer(users_app, name="users")

    @users_app.command("add")
    def add(name: str = typer.Argument(..., help="user name (or the sign-in e-mail / subject)"),
            role: str = typer.Option("reader", help="reader | researcher | admin"),
            json_: bool = typer.Option(False, "--json")):
        """Create the user or set its role (as EXEMPLAR_USER, who must be an admin)."""
        from services.users import cli_user_id, set_role

        try:
            u = set_role(cli_user_id(), name, role)
        except ValueError as exc:
            fail(str(exc))
        emit(u, json_, f"{u['name']}: {u['role']}")

    @users_app.command("list")
    def list_(json_: bool = typer.Option(False, "--json")):
        """Every user with its role."""
        from services.users import list_users

        rows = list_users()
        emit({"users": rows}, json_, "\n".join(f"{u['name']}\t{u['role']}" for u in rows) or "no users")
