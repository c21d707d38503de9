"""`exemplar counterfactual`: generate, score and store a counterfactual for one image, target and method."""
from __future__ import annotations

import json

import typer

from core.registries import COUNTERFACTUAL_METHODS
from services.cli.common import emit, fail, run_job
from services.counterfactuals.runs import METHODS, PRESETS

KEYS = ("counterfactual_id", "flipped", "target_prob", "l1", "bpd", "category", "unet_passes", "seconds",
        "t_final", "guided_passes", "cross_model_flipped", "unet_passes_total", "tries",
        "flip_rate_per_try")


def register(app: typer.Typer) -> None:
    @app.command("counterfactual")
    def counterfactual(model: int = typer.Option(..., help="classifier id"),
                       image: str = typer.Option(..., help="image id or dataset-relative path"),
                       target: str = typer.Option(..., help="target class name or index"),
                       method: str = typer.Option("diffusion", help=COUNTERFACTUAL_METHODS.choices()),
                       preset: str = typer.Option("fast", help="diffusion preset: fast | xaidiff"),
                       affirmative: bool = typer.Option(False, "--affirmative",
                                                        help="also guide the counterfactual back to the original class"),
                       generator: int = typer.Option(None, help="generator id (DDPM for diffusion, GAN for gan; "
                                                                "default: the newest for the dataset)"),
                       seed: int = typer.Option(0),
                       n_seeds: int = typer.Option(1, "--n-seeds", help="seeds run in one batch; the best is kept"),
                       steps: int = typer.Option(None, help="override the preset's steps (diffusion) / max steps"),
                       options: str = typer.Option(None, help='JSON overrides, e.g. \'{"eta": 2, "t_start": 400}\''),
                       device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
                       queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
                       json_: bool = typer.Option(False, "--json")):
        """Counterfactual of IMAGE towards TARGET; prints counterfactual_id, flipped, target_prob, l1, bpd,
        category, unet_passes (all), guided_passes, t_final (0: a finished sample), cross_model_flipped (the
        independent classifier's verdict), seconds."""
        if method not in COUNTERFACTUAL_METHODS:
            fail(f"unknown method {method!r}; choose one of {COUNTERFACTUAL_METHODS.choices(', ')}")
        if preset not in PRESETS:
            fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        try:
            opts = json.loads(options) if options else {}
        except json.JSONDecodeError as exc:
            fail(f"--options is not JSON: {exc}")
        if not isinstance(opts, dict):
            fail("--options must be a JSON object")
        if steps is not None:
            opts["steps" if method == "diffusion" else "max_steps"] = steps
        kind = METHODS[method]
        params = {"model_id": model, "image": image, "target": target, "method": method, "preset": preset,
                  "affirmative": affirmative, "seed": seed, "n_seeds": n_seeds, "options": {method: opts},
                  "device": device}
        if generator is not None:
            params["generator_id" if kind in (None, "ddpm") else f"{kind}_id"] = generator
        res = run_job("counterfactual", params, json_, enqueue=queue)
        out = {k: res.get(k) for k in KEYS}
        out.update({k: res.get(k) for k in ("target", "original_class", "pred", "bpd_eps", "marker_share",
                                            "cross_model_id", "guidance_stopped_t",
                                            "lung_share", "affirmative_category", "attributes_changed", "attributes_source",
                                            "gan_mode", "generator_passes", "category_basis") if k in res})
        human = (f"counterfactual #{out['counterfactual_id']}: {res.get('original_class')} → {res.get('target')} "
                 f"{'flipped' if out['flipped'] else 'not flipped'} (p={out['target_prob']:.3f}, L1={out['l1']:.4f}, "
                 f"bpd={out['bpd']}, {out['category']}, {out['unet_passes']} UNet passes ({out['guided_passes']} guided; "
                 f"{out.get('unet_passes_total')} over {out.get('tries')} tries, flip rate per try "
                 f"{out.get('flip_rate_per_try')}), "
                 f"t_final={out['t_final']}, independent model flipped: {out['cross_model_flipped']}, "
                 f"{out['seconds']:.1f}s)")
        emit(out, json_, human)
