"""`exemplar train`: train a classifier on a dataset as a job (inline by default, --queue for the worker)."""
from __future__ import annotations

from pathlib import Path

import typer

from core.registries import ARCHITECTURES
from services.cli.common import emit, fail, run_job

ARCHS = tuple(sorted(ARCHITECTURES.names()))


def _summary(res: dict) -> str:
    accs = ", ".join(f"{s} {m['accuracy']:.3f}" for s, m in (res.get("metrics") or {}).items())
    return f"model #{res['model_id']} {res.get('name', '')} ({res.get('arch', '')}): accuracy {accs}"


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(dataset: str = typer.Option(..., help="dataset name or id"),
              arch: str = typer.Option("simple_cnn", help=" | ".join(ARCHS)),
              epochs: int = typer.Option(10, help="maximum epochs (early stopping on val accuracy)"),
              freeze_blocks: int = typer.Option(0, "--freeze-blocks", help="freeze the first K feature blocks"),
              pretrained: Path = typer.Option(None, help="local torchvision state dict or safetensors file"),
              lr: float = typer.Option(None, help="peak learning rate (default per architecture)"),
              batch_size: int = typer.Option(64, "--batch-size"),
              seed: int = typer.Option(0),
              patience: int = typer.Option(3, help="epochs without a better val accuracy before stopping"),
              name: str = typer.Option(None, help="model name (default DATASET-ARCH)"),
              parent: int = typer.Option(None, help="parent model id (lineage)"),
              device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
              input_size: int = typer.Option(None, "--input-size",
                                             help="side the network sees, e.g. 224 (default: the dataset's image "
                                                  "size); images are resized on the fly"),
              queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
              json_: bool = typer.Option(False, "--json")):
        """Train a classifier; prints model_id and metrics per split (val, test, test_shifted)."""
        if arch not in ARCHS:
            fail(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        if epochs < 1:
            fail("--epochs must be at least 1")
        if input_size is not None and not 16 <= input_size <= 1024:
            fail(f"--input-size must be between 16 and 1024 px, got {input_size}")
        if pretrained is not None and not pretrained.is_file():
            fail(f"pretrained weights file {pretrained} does not exist")
        params = {"dataset": dataset, "arch": arch, "epochs": epochs, "freeze_blocks": freeze_blocks,
                  "pretrained": str(pretrained.expanduser().resolve()) if pretrained else None, "lr": lr,
                  "batch_size": batch_size, "seed": seed, "patience": patience, "name": name, "parent_id": parent,
                  "device": device, "input_size": input_size}
        res = run_job("train", params, json_, enqueue=queue)
        out = {"model_id": res["model_id"], "name": res.get("name"), "arch": res.get("arch"),
               "dataset_id": res.get("dataset_id"), "metrics": res["metrics"], "best_epoch": res.get("best_epoch"),
               "epochs_run": len(res.get("history") or []), "seconds": res.get("seconds"), "device": res.get("device"),
               "input_size": res.get("input_size"), "image_size": res.get("image_size")}
        emit(out, json_, _summary(res))
