"""`exemplar users …`: accounts, roles (set by admins) and personal tokens, the CLI's identity on a shared
database (docs/architecture.md, Identity)."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail
from services.team import tokens
from services.team.access import set_role
from services.team.users import bootstrap_admin, cli_user_id, list_users

SHOW_ONCE = "(shown once: keep it secret; use it as EXEMPLAR_TOKEN)"


def _token_lines(rows: list[dict]) -> str:
    head = "id\tprefix\tuser\tlabel\tcreated\tlast used\trevoked"
    lines = [f"{t['id']}\t{t['prefix']}…\t{t['user']}\t{t['label']}\t{t['created_at']}\t"
             f"{t['last_used_at'] or '-'}\t{t['revoked_at'] or '-'}" for t in rows]
    return "\n".join([head] + lines) if lines else "no tokens"


def _register_tokens(users_app: typer.Typer) -> None:
    @users_app.command("bootstrap-admin")
    def bootstrap(name: str = typer.Argument(..., help="the first admin's user name"),
                  json_: bool = typer.Option(False, "--json")):
        """Make NAME the database's first admin and print a token for them (only while it has no admin)."""
        try:
            res = bootstrap_admin(name)
        except ValueError as exc:
            fail(str(exc))
        emit(res, json_, f"{res['name']}: admin\ntoken: {res['token']}\n{SHOW_ONCE}")

    @users_app.command("token")
    def token(name: str = typer.Argument(..., help="the user the token acts as"),
              label: str = typer.Option("", help="what the token is for (a host, a person's laptop …)"),
              json_: bool = typer.Option(False, "--json")):
        """Create a personal token for NAME (admins only); the token is printed once and stored hashed."""
        try:
            res = tokens.create(cli_user_id(), name, label)
        except ValueError as exc:
            fail(str(exc))
        emit(res, json_, f"token for {res['user']}: {res['token']}\n{SHOW_ONCE}")

    @users_app.command("tokens")
    def list_tokens(json_: bool = typer.Option(False, "--json")):
        """Every token without its value: prefix, label, user, created, last used, revoked (admins only)."""
        rows = tokens.list_tokens(cli_user_id())
        emit({"tokens": rows}, json_, _token_lines(rows))

    @users_app.command("revoke")
    def revoke(token_id: int = typer.Argument(..., help="the token's id (`exemplar users tokens`)"),
               json_: bool = typer.Option(False, "--json")):
        """Revoke a token (admins only): it stops working at once."""
        try:
            res = tokens.revoke(cli_user_id(), token_id)
        except ValueError as exc:
            fail(str(exc))
        emit(res, json_, f"token {res['token_id']} ({res['prefix']}…) of {res['user']} revoked")


def register(app: typer.Typer) -> None:
    users_app = typer.Typer(help="Users, roles (reader, researcher, admin) and personal tokens.",
                            no_args_is_help=True)
    app.add_typer(users_app, name="users")

    @users_app.command("add")
    def add(name: str = typer.Argument(..., help="user name (or the sign-in e-mail / subject)"),
            role: str = typer.Option("reader", help="reader | researcher | admin"),
            json_: bool = typer.Option(False, "--json")):
        """Create the user or set its role (as an admin: EXEMPLAR_TOKEN, or EXEMPLAR_USER in local mode)."""
        try:
            u = set_role(cli_user_id(), name, role)
        except ValueError as exc:
            fail(str(exc))
        emit(u, json_, f"{u['name']}: {u['role']}")

    @users_app.command("list")
    def list_(json_: bool = typer.Option(False, "--json")):
        """Every user with its role."""
        rows = list_users()
        emit({"users": rows}, json_, "\n".join(f"{u['name']}\t{u['role']}" for u in rows) or "no users")

    _register_tokens(users_app)
