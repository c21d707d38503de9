"""The `exemplar` command line (typer): every working verb takes --json and prints exactly one JSON object."""
from __future__ import annotations

import importlib

import typer

from services.team.roles import PermissionRefused
from services.team.users import process_user, shared_database

app = typer.Typer(help="Exemplar: explain image classifiers and correct them.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

# One module per area; each has register(app). Adding an area is one line here.
AREAS = ["jobs_cmd", "runtime_cmd", "data_cmd", "train_cmd", "explain_cmd", "exbl_cmd",
         "gen_cmd", "counterfactual_cmd", "ltx_cmd", "demo_cmd", "probe_cmd",
         "users_cmd", "study_cmd", "audit_cmd", "report_cmd", "models_cmd"]

for _name in AREAS:  # a listed area that does not import is an error, never skipped
    importlib.import_module(f"services.cli.{_name}").register(app)


# Commands that act as no person: the schema (the one system action), the processes, and the bootstrap itself.
NO_IDENTITY = {("db",), ("worker",), ("serve",), ("users", "bootstrap-admin")}


def check_identity(argv: list[str]) -> None:
    """On a shared database every command, reads included, runs only for a known identity (a token, or set-up
    mode before the first admin); PermissionRefused otherwise. Help and the NO_IDENTITY commands are exempt."""
    words = [a for a in argv if not a.startswith("-")]
    if not words or "--help" in argv or any(tuple(words[:len(k)]) == k for k in NO_IDENTITY):
        return
    if shared_database():
        process_user()


def main() -> None:
    """Run the CLI; any error is one line on stderr (EXEMPLAR_DEBUG=1 shows the traceback)."""
    import os
    import sys

    try:
        check_identity(sys.argv[1:])
        app(standalone_mode=True)
    except SystemExit:
        raise
    except PermissionRefused as exc:  # a role refusal is one line on stderr, never a traceback
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        sys.exit(3)
    except BaseException as exc:  # noqa: BLE001  (one line, whatever went wrong)
        if os.environ.get("EXEMPLAR_DEBUG"):
            raise
        if isinstance(exc, KeyboardInterrupt):
            sys.stderr.write("interrupted\n")
            sys.exit(130)
        text = " ".join(str(exc).split())[:500] or type(exc).__name__
        sys.stderr.write(f"error: {text}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
