"""`exemplar explain` (GradCAM and other methods over a dataset as a job) and `exemplar export explanations`."""
from __future__ import annotations

from pathlib import Path

import typer

from core.registries import EXPLANATION_METHODS
from services.cli.common import emit, fail, run_job
from services.explanations.export import export_explanations as _export
from services.team.users import cli_user_id

SUMMARY_KEYS = ("n", "ar_mean", "ap_mean", "f1_mean", "wr_mean")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain(model: int = typer.Option(..., help="classifier id"),
                method: str = typer.Option("gradcam", help=EXPLANATION_METHODS.choices()
                                                           + " (LTX methods after `exemplar ltx train`)"),
                split: list[str] = typer.Option(None, help="split(s) to explain (repeatable; default all)"),
                target: str = typer.Option("predicted", help="explain the predicted or the true class"),
                tau: float = typer.Option(0.5, help="threshold of T(E) = E ≥ τ for AR / AP / F1 / WR"),
                batch_size: int = typer.Option(128, "--batch-size"),
                limit: int = typer.Option(None, help="explain only the first N images"),
                device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
                queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
                json_: bool = typer.Option(False, "--json")):
        """Explain every image of the model's dataset; prints run_id and summary {n, ar_mean, ap_mean, f1_mean,
        wr_mean}."""
        if method not in EXPLANATION_METHODS:
            fail(f"unknown method {method!r}; choose one of {EXPLANATION_METHODS.choices(', ')}")
        if target not in ("predicted", "true"):
            fail("--target must be 'predicted' or 'true'")
        if not 0 < tau <= 1:
            fail("--tau must be in (0, 1]")
        params = {"model_id": model, "method": method, "splits": list(split or []), "target": target, "tau": tau,
                  "batch_size": batch_size, "limit": limit, "device": device}
        res = run_job("explain", params, json_, enqueue=queue)
        s = res["summary"]
        out = {"run_id": res["run_id"], "model_id": res["model_id"], "dataset_id": res["dataset_id"],
               "method": res["method"], "target": res["target"], "splits": res["splits"], "tau": res["tau"],
               "maps_path": res["maps_path"], "summary": s}
        emit(out, json_, f"run #{res['run_id']} ({res['method']}, {s['n']} images, every split): "
                         + ", ".join(f"{k.removesuffix('_mean').upper()} {_fmt(s.get(k))}" for k in SUMMARY_KEYS[1:])
                         + f"; held-out AR (val, test, test_shifted: what a report compares) "
                           f"{_fmt(s.get('ar_mean_heldout'))}")

    export_app = typer.Typer(help="Export results to files.", no_args_is_help=True)
    app.add_typer(export_app, name="export")

    @export_app.command("explanations")
    def export_explanations(run: int = typer.Option(..., "--run", help="explanation run id"),
                            out: Path = typer.Option(..., "--out", help="output .npz"),
                            csv: Path = typer.Option(None, "--csv", help="also write the metrics table as CSV"),
                            json_: bool = typer.Option(False, "--json")):
        """Write image ids, paths, labels, predictions, probabilities, maps and every metric of a run to a .npz."""
        try:
            res = _export(run, out, csv, user_id=cli_user_id())
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        emit(res, json_, f"run #{res['run_id']}: {res['n']} explanations → {res['out']}"
                         + (f" and {res['csv']}" if res["csv"] else ""))
