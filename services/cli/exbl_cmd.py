"""`exemplar exbl`: retrain a classifier from two exemplars (eXBL and the other XBL methods) as a job."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail, run_job

METHODS = ("exbl", "exbl_cf", "penalty_mask", "counterexamples", "rrr", "ce")


def _summary(res: dict) -> str:
    accs = ", ".join(f"{s} {m['accuracy']:.3f}" for s, m in (res.get("metrics") or {}).items())
    ex = (res.get("explain") or {}).get("summary") or {}
    ar = ex.get("ar_mean")
    return (f"model #{res['model_id']} (child of #{res['parent_id']}, {res.get('method')}): accuracy {accs}"
            + (f"; AR {ar:.3f}" if isinstance(ar, (int, float)) else ""))


def register(app: typer.Typer) -> None:
    @app.command("exbl")
    def exbl(model: int = typer.Option(..., help="parent classifier id"),
             good: str = typer.Option(None, help="good exemplar: image id or dataset-relative path"),
             bad: str = typer.Option(None, help="bad exemplar: image id or dataset-relative path"),
             auto: bool = typer.Option(False, "--auto", help="use the suggested pair (max-AR / min-AR image of the "
                                                             "parent's latest GradCAM run; runs one if none)"),
             method: str = typer.Option("exbl", help="exbl | exbl_cf | penalty_mask | counterexamples | rrr | ce"),
             epochs: int = typer.Option(None, help="fine-tune epochs (default 5)"),
             lam: float = typer.Option(None, help="weight of the explanation term (default per method)"),
             margin: float = typer.Option(None, help="triplet margin (exbl, exbl_cf)"),
             lr: float = typer.Option(None, help="learning rate (default 1e-3)"),
             freeze_blocks: int = typer.Option(0, "--freeze-blocks", help="freeze the first K feature blocks"),
             batch_size: int = typer.Option(64, "--batch-size"),
             seed: int = typer.Option(0),
             name: str = typer.Option(None, help="child model name (default PARENT-METHOD)"),
             device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
             threads: int = typer.Option(None, help="CPU threads for torch"),
             queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
             json_: bool = typer.Option(False, "--json")):
        """Fine-tune MODEL from a good and a bad explanation; prints the new model_id, parent_id, metrics, explain."""
        if method not in METHODS:
            fail(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if auto and (good or bad):
            fail("--auto and --good/--bad exclude each other")
        if (good is None) != (bad is None):
            fail("give both --good and --bad, or --auto")
        if epochs is not None and epochs < 1:
            fail("--epochs must be at least 1")
        params = {"model_id": model, "method": method, "good": good, "bad": bad, "auto": auto, "epochs": epochs,
                  "lam": lam, "margin": margin, "lr": lr, "freeze_blocks": freeze_blocks, "batch_size": batch_size,
                  "seed": seed, "name": name, "device": device, "threads": threads}
        res = run_job("exbl", params, json_, enqueue=queue)
        out = {"model_id": res["model_id"], "parent_id": res["parent_id"], "name": res.get("name"),
               "method": res.get("method"), "settings": res.get("settings"), "metrics": res["metrics"],
               "explain": res.get("explain"), "feedback_ids": res.get("feedback_ids"),
               "pair": {k: {kk: v.get(kk) for kk in ("image_id", "path", "label", "target")}
                        for k, v in (res.get("pair") or {}).items()},
               "history": res.get("history"), "seconds": res.get("seconds"), "device": res.get("device")}
        emit(out, json_, _summary(res))
