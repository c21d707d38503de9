"""`exemplar ltx train` (pretrain an LTX explainer for a classifier) and `exemplar evaluate` (compare methods)."""
from __future__ import annotations

import typer

from core.registries import EXPLANATION_METHODS, METRICS
from services.cli.common import emit, fail, run_job
from services.explanations.evaluation import parse_methods


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _table(res: dict) -> str:
    cols = METRICS.specs(groups="evaluation")  # what `evaluate` scores (core.registries)
    lines = [f"model #{res['model_id']} · {res['split']} · {res['n']} images (predicted class; POS/DEL lower is "
             f"better, NEG/INS higher, max 90)",
             f"{'method':24s} " + " ".join(f"{m.label:>6s}" for m in cols) + f" {'s/img':>8s}"]
    for name, r in res["methods"].items():  # localisation in [0, 1] to 3 decimals, faithfulness (max 90) to 1
        lines.append(f"{r.get('label', name):24s} "
                     + " ".join(f"{_fmt(r[m.name], 3 if m.kind == 'localisation' else 1):>6s}" for m in cols)
                     + f" {r['seconds_per_image']:>8.4f}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    ltx_app = typer.Typer(help="LTX learned explainer (Learning to Explain).", no_args_is_help=True)
    app.add_typer(ltx_app, name="ltx")

    @ltx_app.command("train")
    def train(model: int = typer.Option(..., help="classifier id to explain"),
              epochs: int = typer.Option(None, help="pretraining epochs over the train split (default 5)"),
              alpha: float = typer.Option(None, help="weight α of the mask mean in the LTX loss (default: chosen on val per masking, "
                                                  "core.ltx.loss.ALPHAS)"),
              masking: str = typer.Option(None, help="soft (the paper's x ⊙ m: method `ltx`, default) | sample "
                                                     "(binary masks sampled from m: method `ltx_sampled`)"),
              lr: float = typer.Option(None, help="Adam learning rate"),
              batch_size: int = typer.Option(None, "--batch-size"),
              limit: int = typer.Option(None, help="pretrain on the first N training images only"),
              seed: int = typer.Option(None),
              name: str = typer.Option(None, help="explainer name (default ltx-<classifier name>)"),
              device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
              queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
              json_: bool = typer.Option(False, "--json")):
        """Pretrain an LTX explainer on the classifier's training split; prints explainer_id and its history."""
        if epochs is not None and epochs < 1:
            fail("--epochs must be at least 1")
        if alpha is not None and alpha < 0:
            fail("--alpha must be ≥ 0")
        from core.ltx.loss import MASKINGS

        if masking is not None and masking not in MASKINGS:
            fail(f"--masking must be one of {', '.join(MASKINGS)}")
        params = {"model_id": model, "epochs": epochs, "alpha": alpha, "masking": masking, "lr": lr,
                  "batch_size": batch_size,
                  "limit": limit, "seed": seed, "name": name, "device": device}
        res = run_job("ltx.train", {k: v for k, v in params.items() if v is not None}, json_, enqueue=queue)
        last = res["history"][-1]
        out = {"explainer_id": res["explainer_id"], "model_id": res["model_id"], "alpha": res["alpha"],
               "masking": res.get("masking"),
               "epochs": len(res["history"]), "history": res["history"], "metrics": res["metrics"],
               "seconds": res["seconds"], "device": res["device"], "checkpoint": res["checkpoint"]}
        emit(out, json_, f"LTX explainer #{res['explainer_id']} for model #{res['model_id']}: loss {last['loss']:.3f} "
                         f"(CE {last['ce']:.3f}, mask mean {last['mask_mean']:.3f}) in {res['seconds']:.1f} s")

    @app.command("evaluate")
    def evaluate(model: int = typer.Option(..., help="classifier id"),
                 methods: str = typer.Option(None, help="comma-separated: " + EXPLANATION_METHODS.choices(", ")
                                                        + " (ig for integrated_gradients; default: "
                                                        + EXPLANATION_METHODS.choices(", ", evaluated_by_default=True)
                                                        + ", the LTX ones when their explainer exists)"),
                 split: str = typer.Option("test", help="split to evaluate on"),
                 limit: int = typer.Option(None, help="only the first N images of the split"),
                 target: str = typer.Option("both", help="explained class: predicted, or both (predicted and true)"),
                 tau: float = typer.Option(0.5, help="threshold of T(E) = E ≥ τ for AR / AP"),
                 finetune_steps: int = typer.Option(None, "--finetune-steps", help="LTX per-instance steps (25)"),
                 batch_size: int = typer.Option(32, "--batch-size"),
                 device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
                 queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
                 json_: bool = typer.Option(False, "--json")):
        """AR, AP, POS, NEG, DEL, INS and seconds per image for each method; stored on the classifier's row."""
        try:
            names = parse_methods(methods)
        except ValueError as exc:
            fail(str(exc))
        if target not in ("predicted", "both"):
            fail("--target must be predicted or both")
        if not 0 < tau <= 1:
            fail("--tau must be in (0, 1]")
        if limit is not None and limit < 1:
            fail("--limit must be at least 1")
        targets = ["predicted", "true"] if target == "both" else ["predicted"]
        params = {"model_id": model, "methods": names if methods else None, "split": split, "limit": limit, "targets": targets,
                  "tau": tau, "finetune_steps": finetune_steps, "batch_size": batch_size, "device": device}
        res = run_job("evaluate", params, json_, enqueue=queue)
        emit(res, json_, _table(res) + "".join(f"\nskipped {k}: {v}" for k, v in (res.get("skipped") or {}).items()))
