"""The `exemplar` command line (typer): every working verb takes --json and prints exactly one JSON object."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="Exemplar: explain image classifiers and correct them.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

# One module per area; each has register(app). Adding an area is one line here.
AREAS = ["jobs_cmd", "runtime_cmd", "data_cmd", "train_cmd", "explain_cmd", "exbl_cmd",
         "gen_cmd", "counterfactual_cmd", "ltx_cmd", "demo_cmd", "bench_cmd", "probe_cmd",
         "users_cmd", "study_cmd", "audit_cmd", "report_cmd", "models_cmd"]

for _name in AREAS:
    try:
        _mod = importlib.import_module(f"services.cli.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"services.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    """Run the CLI; any error is one line on stderr (EXEMPLAR_DEBUG=1 shows the traceback)."""
    import os
    import sys

    from services.roles import PermissionRefused

    try:
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
