"""`exemplar exbl`: retrain a classifier from two exemplars as a job: K seeds (3 by default) of a child, a matched
plain-CE control and a random-pair control; prints the models, the held-out effects (child − control, the recipe,
your choice; 95 % intervals) and the verdict."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail, run_job
from services.models.registry import get_model
from services.retraining.retrain import DEFAULT_SEEDS
from services.retraining.retrain_pairs import check_refs


def _summary(res: dict) -> str:
    accs = ", ".join(f"{s} {m['accuracy']:.3f}" for s, m in (res.get("metrics") or {}).items())
    lines = [f"retrain #{res['retrain_id']} of #{res['parent_id']} ({res.get('method')}, {res.get('seeds')} seed(s)); "
             f"model #{res['model_id']} (seed {res['seed_models'][0]['seed']}): accuracy {accs}"]
    for m in res.get("seed_models") or []:
        lines.append(f"  seed {m['seed']}: child #{m['child_id']} · control #{m.get('control_id') or '—'} · "
                     f"random-pair control #{m.get('random_control_id') or '—'}")
    lines.append(str(res.get("verdict") or ""))
    return "\n".join(lines)


def _precheck(model: int, good: str | None, bad: str | None) -> None:
    """Refuse an exemplar from test / test_shifted before the job starts (one line, nothing written)."""
    m = get_model(model)
    if m is None:
        fail(f"no model {model}")
    if m.get("dataset_id") and (good or bad):
        try:
            check_refs(m["dataset_id"], good, bad)
        except ValueError as exc:
            fail(str(exc))


def _output(res: dict) -> dict:
    return {"model_id": res["model_id"], "parent_id": res["parent_id"], "retrain_id": res.get("retrain_id"),
            "seed_models": res.get("seed_models"), "name": res.get("name"),
            "method": res.get("method"), "settings": res.get("settings"), "metrics": res["metrics"],
            "control": res.get("control"), "random_control": res.get("random_control"),
            "effect": res.get("effect"), "effect_recipe": res.get("effect_recipe"),
            "effect_choice": res.get("effect_choice"), "effect_parent": res.get("effect_parent"),
            "effect_vs": res.get("effect_vs"), "splits": res.get("splits"), "roles": res.get("roles"),
            "verdict": res.get("verdict"), "seeds": res.get("seeds"), "interval": res.get("interval"),
            "describes": res.get("describes"), "random_pairs": res.get("random_pairs"),
            "explain": res.get("explain"), "feedback_ids": res.get("feedback_ids"),
            "pair": {k: {kk: v.get(kk) for kk in ("image_id", "path", "label", "target", "split")}
                     for k, v in (res.get("pair") or {}).items()},
            "history": res.get("history"), "seconds": res.get("seconds"), "device": res.get("device")}


def _method_help() -> str:
    from core.xbl import DEFAULT_METHOD, LABELS, list_methods

    return (f"retraining method (default {DEFAULT_METHOD}: {LABELS.get(DEFAULT_METHOD, '')}, chosen on val by "
            f"bench/exbl_effect.py); one of {', '.join(list_methods())}")


def register(app: typer.Typer) -> None:
    @app.command("exbl")
    def exbl(model: int = typer.Option(..., help="parent classifier id"),
             good: str = typer.Option(None, help="good exemplar (a train image): image id or dataset-relative path"),
             bad: str = typer.Option(None, help="bad exemplar (a train image): image id or dataset-relative path"),
             auto: bool = typer.Option(False, "--auto", help="use the suggested pair (max-AR / min-AR train image "
                                                             "of the parent's latest GradCAM run; runs one if none)"),
             method: str = typer.Option(None, help=_method_help()),
             epochs: int = typer.Option(None, help="fine-tune epochs (default 5)"),
             lam: float = typer.Option(None, help="weight of the explanation term (default per method)"),
             margin: float = typer.Option(None, help="triplet margin (triplet methods)"),
             lr: float = typer.Option(None, help="learning rate (default 1e-3)"),
             freeze_blocks: int = typer.Option(0, "--freeze-blocks", help="freeze the first K feature blocks"),
             train_last: int = typer.Option(0, "--train-last", help="train only the last K stages / blocks (the "
                                                                    "head is the last; 0 = all)"),
             batch_size: int = typer.Option(64, "--batch-size"),
             seed: int = typer.Option(0, help="first seed"),
             seeds: int = typer.Option(DEFAULT_SEEDS, help="K seeds (seed..seed+K−1), each a child and its controls; "
                                                           "intervals resample seeds, then images (1: images only)"),
             control: bool = typer.Option(True, "--control/--no-control",
                                          help="also fine-tune the matched plain-CE control (default on)"),
             random_control: bool = typer.Option(True, "--random-control/--no-random-control",
                                                 help="also run the method with a random train pair per seed: "
                                                      "separates the recipe from your choice (default on)"),
             name: str = typer.Option(None, help="child model name (default PARENT-METHOD)"),
             device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
             threads: int = typer.Option(None, help="CPU threads for torch"),
             queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
             json_: bool = typer.Option(False, "--json")):
        """Fine-tune MODEL from a good and a bad explanation; prints the child, its control, effect and verdict."""
        from core.xbl import DEFAULT_METHOD, list_methods

        names = list_methods()
        method = method or DEFAULT_METHOD
        if method not in names:
            fail(f"unknown method {method!r}; choose one of {', '.join(names)}")
        if auto and (good or bad):
            fail("--auto and --good/--bad exclude each other")
        if (good is None) != (bad is None):
            fail("give both --good and --bad, or --auto")
        if epochs is not None and epochs < 1:
            fail("--epochs must be at least 1")
        _precheck(model, good, bad)
        params = {"model_id": model, "method": method, "good": good, "bad": bad, "auto": auto, "epochs": epochs,
                  "lam": lam, "margin": margin, "lr": lr, "freeze_blocks": freeze_blocks, "train_last": train_last,
                  "batch_size": batch_size,
                  "seed": seed, "seeds": seeds, "control": control, "random_control": random_control, "name": name, "device": device,
                  "threads": threads}
        res = run_job("exbl", params, json_, enqueue=queue)
        emit(_output(res), json_, _summary(res))
