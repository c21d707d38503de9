"""Classifier training and evaluation use cases: the `train` job, train_classifier() and evaluate_splits().

A run reads the dataset's array cache, trains on the device (cuda when present), evaluates val / test /
test_shifted, writes the checkpoint atomically and registers the model last, so a cancelled or failed run
leaves neither a registry row nor a checkpoint.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from core.registries import ARCHITECTURES
from services.platform.settings import resolve_device
from services.data.datasets import get_dataset, load_arrays
from services.models.registry import load_classifier, prune_partial, register_model, save_checkpoint_dir, update_metrics
from services.team.access import check_use_case

Progress = Callable[..., None]
ARCHS = tuple(sorted(ARCHITECTURES.names()))
DEFAULT_LR = {s.name: s.lr for s in ARCHITECTURES}
EVAL_SPLITS = ("val", "test", "test_shifted")


def _sub(progress: Progress | None, lo: float, hi: float) -> Progress:
    if progress is None:
        return lambda *a, **k: None
    return lambda f, msg="", **kw: progress(lo + (hi - lo) * float(f), msg, **kw)


def train_classifier(dataset: int | str, arch: str = "simple_cnn", epochs: int = 10, *, freeze_blocks: int = 0,
                     pretrained: str | None = None, lr: float | None = None, batch_size: int = 64, seed: int = 0,
                     patience: int = 3, augment: bool = True, weight_decay: float = 1e-4,
                     arch_kwargs: dict | None = None, name: str | None = None, parent_id: int | None = None,
                     device: str | None = None, threads: int | None = None, input_size: int | None = None,
                     user_id: int | None, job_id: int | None = None, progress: Progress | None = None,
                     resume_dir: str | None = None) -> dict:
    """Train a classifier on a dataset (id or name) and register it.

    resume_dir: kept across attempts of one job (JobContext.state_dir): a retried job resumes after its last
    finished epoch; removed once the model is registered.

    input_size: the side the network sees (default: the dataset's image size); images are resized on the fly
    (per batch, inside the model), the size is stored in the checkpoint's config, and every later use (explain,
    eXBL, counterfactuals) feeds native-size images that the model resizes itself.

    Returns {model_id, name, arch, dataset_id, checkpoint, metrics: {val, test, test_shifted}, history,
    best_epoch, stopped_early, seconds, device}.
    """
    check_use_case(user_id, "train")  # a direct call is checked here; a job was checked when submitted
    from core.train.classifier import TrainConfig, cpu_threads, evaluate, fit
    t0 = time.monotonic()
    say = progress or (lambda *a, **k: None)
    _check_request(arch, epochs, pretrained)
    ds = get_dataset(dataset)
    prune_partial()
    say(0.0, f"loading dataset {ds['name']}")
    arrays = load_arrays(ds["id"])
    tr, va = arrays.split_index("train"), arrays.split_index("val")
    if len(tr) == 0:
        raise ValueError(f"dataset {ds['name']} has no train split")
    dev = resolve_device(device)
    input_size = int(input_size or arrays.size)
    model, pre_report, arch_kwargs = _build_model(arch, len(arrays.classes), input_size, arch_kwargs, seed,
                                                  pretrained, freeze_blocks)
    cfg = TrainConfig(epochs=epochs, lr=lr or DEFAULT_LR[arch], batch_size=batch_size, patience=patience, seed=seed,
                      augment=augment, weight_decay=weight_decay, threads=threads)
    say(0.01, f"training {arch} at {input_size} px on {len(tr)} images of {arrays.size} px ({dev})")
    res = fit(model, arrays.images[tr], arrays.labels[tr], arrays.images[va], arrays.labels[va], cfg, device=dev,
              progress=_sub(progress, 0.01, 0.9), resume_dir=resume_dir)
    say(0.9, "evaluating val, test and test_shifted", force=True)
    with cpu_threads(threads if str(dev) == "cpu" else None):
        metrics = evaluate(model, arrays, EVAL_SPLITS, device=dev)
    config = {
        "arch": arch, "num_classes": len(arrays.classes), "in_chans": 1, "arch_kwargs": arch_kwargs,
        "classes": list(arrays.classes), "image_size": arrays.size, "input_size": input_size, "dataset_id": ds["id"], "dataset": ds["name"],
        "train": cfg.to_dict(), "freeze_blocks": freeze_blocks, "pretrained": pre_report, "history": res.history,
        "best_epoch": res.best_epoch, "stopped_early": res.stopped_early, "device": str(dev),
        "train_seconds": res.seconds,
    }
    say(0.97, "saving checkpoint", force=True)  # the last point where a cancel is honoured
    model_id, ckpt = _save_and_register(model, config, dict(
        name=name or f"{ds['name']}-{arch}", arch=arch, dataset_id=ds["id"], parent_id=parent_id, config=config,
        metrics=metrics, job_id=job_id, created_by=user_id))
    if resume_dir:
        shutil.rmtree(resume_dir, ignore_errors=True)
    acc = {s: round(m["accuracy"], 4) for s, m in metrics.items()}
    say(1.0, f"model #{model_id}: accuracy " + ", ".join(f"{s} {a:.3f}" for s, a in acc.items()), force=True)
    return {"model_id": model_id, "name": name or f"{ds['name']}-{arch}", "arch": arch, "dataset_id": ds["id"],
            "checkpoint": str(ckpt), "metrics": metrics, "history": res.history, "best_epoch": res.best_epoch,
            "stopped_early": res.stopped_early, "seconds": round(time.monotonic() - t0, 2), "device": str(dev),
            "input_size": input_size, "image_size": arrays.size}


def _check_request(arch: str, epochs: int, pretrained: str | None) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if epochs < 1:
        raise ValueError("--epochs must be at least 1")
    if pretrained and not Path(pretrained).is_file():
        raise FileNotFoundError(f"pretrained weights file {pretrained} does not exist")


def _build_model(arch: str, num_classes: int, input_size: int, arch_kwargs: dict | None, seed: int,
                 pretrained: str | None, freeze_blocks: int) -> tuple[Any, dict | None, dict]:
    """The seeded network, with pretrained weights loaded and its first blocks frozen when asked; returns (model,
    the pretrained-weights report, the arch kwargs it was built with)."""
    import torch

    from core.models import create_model, freeze_blocks as freeze
    from core.train.pretrained import load_pretrained

    arch_kwargs = dict(arch_kwargs or {})
    if not 16 <= input_size <= 1024:
        raise ValueError(f"--input-size must be between 16 and 1024 px, got {input_size}")
    if arch == "mobilenet_v2" and input_size >= 128:
        arch_kwargs.setdefault("small_input", False)  # the standard stride-2 stem at 224 px (the eXBL paper's)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_chans=1, input_size=input_size, **arch_kwargs)
    pre_report = load_pretrained(model, pretrained) if pretrained else None
    if freeze_blocks:
        if freeze_blocks >= len(model.blocks):
            raise ValueError(f"--freeze-blocks {freeze_blocks} would freeze all {len(model.blocks)} blocks of {arch}")
        freeze(model, freeze_blocks)
    return model, pre_report, arch_kwargs


def _save_and_register(model, config: dict, row: dict) -> tuple[int, Path]:
    """Write the checkpoint folder, then the registry row (register_model's keywords in `row`); a failed
    registration removes the folder. Returns (model id, checkpoint path)."""
    ckpt = save_checkpoint_dir(model.cpu(), config)
    try:
        return register_model(checkpoint=ckpt, **row), ckpt
    except BaseException:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        raise


def evaluate_splits(model: Any, dataset: Any = None, splits: Sequence[str] = EVAL_SPLITS, device: str | None = None,
                    store: bool = False) -> dict[str, dict]:
    """{split: {n, accuracy, macro_f1, per_class, confusion}} for a registry id or a torch module.

    dataset: id, name or DatasetArrays (default: the model's own dataset). store=True merges the result into
    the model's registry row (only for a registry id).
    """
    from core.data.arrays import DatasetArrays
    from core.train.classifier import evaluate
    model_id = None
    dev = resolve_device(device)
    if isinstance(model, int):
        model_id = model
        model, row = load_classifier(model_id, dev)
        if dataset is None:
            dataset = row["dataset_id"]
    if dataset is None:
        raise ValueError("evaluate_splits needs a dataset for a model that is not in the registry")
    arrays = dataset if isinstance(dataset, DatasetArrays) else load_arrays(get_dataset(dataset)["id"])
    out = evaluate(model, arrays, splits, device=dev)
    if store:
        if model_id is None:
            raise ValueError("store=True needs a registry model id")
        update_metrics(model_id, out)
    return out


def train_job(ctx) -> dict:
    """`train` job. params: dataset (id or name), arch, epochs, freeze_blocks, pretrained, lr, batch_size, seed,
    patience, augment, arch_kwargs, name, parent_id, device, threads, input_size."""
    p = dict(ctx.params)
    return train_classifier(
        p["dataset"], p.get("arch", "simple_cnn"), int(p.get("epochs", 10)),
        freeze_blocks=int(p.get("freeze_blocks") or 0), pretrained=p.get("pretrained"),
        lr=float(p["lr"]) if p.get("lr") else None, batch_size=int(p.get("batch_size") or 64),
        seed=int(p.get("seed") or 0), patience=int(p.get("patience") or 3), augment=bool(p.get("augment", True)),
        arch_kwargs=p.get("arch_kwargs"), name=p.get("name"), parent_id=p.get("parent_id"), device=p.get("device"),
        threads=int(p["threads"]) if p.get("threads") else None,
        input_size=int(p["input_size"]) if p.get("input_size") else None, user_id=ctx.user_id, job_id=ctx.job_id,
        progress=ctx.progress, resume_dir=str(ctx.state_dir()) if hasattr(ctx, "state_dir") else None)
