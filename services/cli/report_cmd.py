"""`exemplar report`: the before / after evidence of a retrain on held-out splits (val, test, test_shifted):
parent | control | child per split with 95 % intervals, the effect child − control, and the verdict."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail


def _human(j: dict) -> str:
    lines = [f"report #{j['parent']} → #{j['child']}" + (f" (control #{j['control']})" if j.get("control") else "")]
    for s, row in j["splits"].items():
        cells = []
        for who in ("parent", "control", "child"):
            c = row.get(who)
            v = c.get("accuracy") if c else None
            cells.append(f"{who} {v:.3f}" if isinstance(v, float) else f"{who} n/a")
        lines.append(f"  {s}: accuracy " + " · ".join(cells))
    lines.append(j["verdict"])
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(parent: int = typer.Option(..., help="the model before (the parent)"),
               child: int = typer.Option(..., help="the retrained model after (the child)"),
               html: str = typer.Option(None, "--html", help="also write the self-contained HTML report here"),
               device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
               json_: bool = typer.Option(False, "--json")):
        """Held-out before / after report: accuracy, AR, AP, WR per split for parent, control and child."""
        from services.report import evidence_report, export_report

        try:
            j = evidence_report(parent, child, device=device)
            if html:
                j["html"] = str(export_report(parent, child, out=html))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            fail(str(exc))
        emit(j, json_, _human(j))
