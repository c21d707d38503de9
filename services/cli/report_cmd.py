"""`exemplar report`: the before / after evidence of a retrain on held-out splits (val as selection, test and
test_shifted as evidence): parent | plain control | random-pair control | child per split with 95 % intervals,
the effects (child − control, the recipe, your choice) and the verdict. `--parent P --child C` describes child C
alone (its own seed and controls); `--retrain R` the retrain's group over every seed. The JSON's `report` says
which ('child' | 'retrain')."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail
from services.presentation.report_view import WHO, WHO_NAMES
from services.counterfactuals.probe import probe_rows
from services.retraining.report import evidence_report, export_report, retrain_report
from services.team.users import cli_user_id


def _human(j: dict) -> str:
    from core.data.roles import heading

    head = (f"report of retrain #{j['retrain']} ({j['seeds']} seeds) of #{j['parent']}" if j["report"] == "retrain"
            else f"report #{j['parent']} → #{j['child']} (this child alone)")
    lines = [head + (f" · plain control #{j['control']}" if j.get("control") else "")
             + (f" · random-pair control #{j['random_control']}" if j.get("random_control") else "")]
    for s, row in j["splits"].items():
        cells = []
        for who in WHO:
            c = row.get(who)
            v = c.get("accuracy") if c else None
            if c is not None:
                cells.append(f"{WHO_NAMES[who]} {v:.3f}" if isinstance(v, float) else f"{WHO_NAMES[who]} n/a")
        lines.append(f"  {heading(s)}: accuracy " + " · ".join(cells))
    lines.append(j["verdict"])
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(parent: int = typer.Option(None, help="the model before (the parent)"),
               child: int = typer.Option(None, help="the retrained model after (the child): described alone"),
               retrain: int = typer.Option(None, help="a retrain id (from `exemplar exbl`): its seeds as a group"),
               html: str = typer.Option(None, "--html", help="also write the self-contained HTML report here"),
               device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
               json_: bool = typer.Option(False, "--json")):
        """Held-out before / after report: accuracy, AR, AP, WR per split for parent, controls and child."""
        if retrain is None and (parent is None or child is None):
            fail("give --parent and --child, or --retrain")
        if retrain is not None and (parent is not None or child is not None):
            fail("--retrain and --parent/--child exclude each other")
        try:
            if retrain is not None:
                j = retrain_report(retrain)
            else:
                j = evidence_report(parent, child, device=device)
            if html:
                j["html"] = str(export_report(j["parent"], j["child"], out=html, user_id=cli_user_id(),
                                              probe=_probe(j["parent"], j["child"])))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            fail(str(exc))
        emit(j, json_, _human(j))


def _probe(parent: int, child: int) -> list[dict] | str:
    """The shortcut probe's rows for the HTML report, or the reason there are none (one line in the file)."""
    try:
        return probe_rows([int(parent), int(child)])
    except ValueError as exc:
        return str(exc)
