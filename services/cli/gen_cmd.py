"""`exemplar gen train`: train a generator (ddpm, or any kind in services.counterfactuals.generators.GEN_KINDS) as a job."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail, run_job
from services.counterfactuals.generators import GEN_KINDS, command_line


def register(app: typer.Typer) -> None:
    gen_app = typer.Typer(help="Generative models for counterfactuals (DDPM, GAN).", no_args_is_help=True)
    app.add_typer(gen_app, name="gen")

    @gen_app.command("train")
    def train(dataset: str = typer.Option(..., help="dataset name or id"),
              kind: str = typer.Option("ddpm", help="generator kind: ddpm | gan"),
              steps: int = typer.Option(None, help="training steps (default per kind)"),
              seed: int = typer.Option(0),
              batch_size: int = typer.Option(None, "--batch-size"),
              lr: float = typer.Option(None, help="learning rate (default per kind)"),
              preset: str = typer.Option(None, help="network size preset (ddpm: tiny | small | base)"),
              max_minutes: float = typer.Option(None, "--max-minutes",
                                                help="stop training after this long (the steps run are recorded)"),
              sample_every: int = typer.Option(None, "--sample-every", help="sample grid every N steps"),
              bpd_images: int = typer.Option(None, "--bpd-images", help="held-out images for the bits/dim threshold"),
              bpd_terms: int = typer.Option(None, "--bpd-terms", help="terms of the strided bits/dim estimate"),
              name: str = typer.Option(None, help="generator name (default DATASET-KIND)"),
              device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
              queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
              json_: bool = typer.Option(False, "--json")):
        """Train a generator on the dataset's training split and register it (kind ddpm or gan)."""
        if kind not in GEN_KINDS:
            fail(f"unknown generator kind {kind!r}; choose one of {', '.join(sorted(GEN_KINDS))}")
        if steps is not None and steps < 1:
            fail("--steps must be at least 1")
        params = {"dataset": dataset, "kind": kind, "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr,
                  "preset": preset, "max_minutes": max_minutes, "sample_every": sample_every,
                  "bpd_images": bpd_images, "bpd_terms": bpd_terms, "name": name, "device": device,
                  "command": command_line()}
        res = run_job("gen.train", {k: v for k, v in params.items() if v is not None}, json_, enqueue=queue)
        human = (f"generator #{res['generator_id']} ({res.get('kind')}) {res.get('name', '')}: "
                 f"{res.get('training_steps')} steps, final loss {res.get('final_loss')}")
        emit(res, json_, human)
