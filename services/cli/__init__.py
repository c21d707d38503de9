"""The `exemplar` command line (typer): every working verb takes --json and prints exactly one JSON object."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="Exemplar: explain image classifiers and correct them.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

# One module per area; each has register(app). Adding an area is one line here.
AREAS = ["jobs_cmd", "runtime_cmd", "data_cmd", "train_cmd", "explain_cmd", "exbl_cmd",
         "gen_cmd", "counterfactual_cmd", "ltx_cmd", "demo_cmd", "bench_cmd", "probe_cmd"]

for _name in AREAS:
    try:
        _mod = importlib.import_module(f"services.cli.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"services.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
