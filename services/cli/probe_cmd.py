"""`exemplar probe artefact`: paste an artefact at each corner of held-out images and report prediction changes."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail
from services.counterfactuals.probe import probe_artefact

probe_app = typer.Typer(help="Shortcut probes of a classifier.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(probe_app, name="probe")


@probe_app.command("artefact")
def artefact(model: int = typer.Option(..., help="classifier id"),
             artefact_: str = typer.Option("marker", "--artefact",
                                           help="'marker' (the dataset's marker glyph) or an image FILE (PNG, alpha "
                                                "channel = opacity)"),
             box: str = typer.Option(None, help="one box 'r0,c0,r1,c1' instead of the four corners"),
             split: str = typer.Option("test", help="held-out split to probe"),
             limit: int = typer.Option(None, help="at most this many images"),
             device: str = typer.Option(None, help="cpu | cuda | auto"),
             json_: bool = typer.Option(False, "--json")):
    """Per position: share of held-out predictions that change and the mean Δp per class."""
    bx = None
    if box:
        try:
            bx = [int(v) for v in box.split(",")]
        except ValueError:
            fail(f"--box {box!r} is not four integers r0,c0,r1,c1")
        if len(bx) != 4:
            fail(f"--box {box!r} is not four integers r0,c0,r1,c1")
    try:
        res = probe_artefact(model, artefact_, box=bx, split=split, limit=limit, device=device)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
    d = res.as_dict()
    lines = [f"artefact probe of model #{model} ({res.artefact}, {res.n} {res.split} images):"]
    for p in res.positions:
        lines.append(f"  box {p['box']}: {p['changed']:.1%} of predictions change ({p['changed_other']:.1%} of those "
                     f"not predicted {p['toward']}), most toward {p['toward']} ({p['shift'][p['toward']]:+.3f})")
    emit(d, json_, "\n".join(lines))
