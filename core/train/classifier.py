"""Classifier training on the device: AdamW, light augmentation (never a horizontal flip), early stopping on
val accuracy with the best weights kept; plus batched predict_proba and per-split evaluation.

Images travel as uint8 tensors (N, C, H, W) already on the device and become floats in [0, 1] per batch, so a
whole SynthCXR set fits and no DataLoader is needed. Progress goes to an optional callback
progress(fraction, message, metrics=None); the callback may raise to stop the run (the job's cancel).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.data.arrays import DatasetArrays
from core.models.base import resize_input
from core.train.resume import load_epoch_state, save_epoch_state
from core.metrics.classification import classification_report

Progress = Callable[..., None]
EVAL_SPLITS = ("val", "test", "test_shifted")


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (stored with the checkpoint)."""

    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 3
    seed: int = 0
    augment: bool = True
    max_shift: float = 0.03  # random translation, as a fraction of the image side
    jitter: float = 0.1  # brightness / contrast jitter
    noise: float = 0.01  # additive Gaussian noise (std, in [0, 1] units)
    progress_every: int = 10  # batches between progress reports
    threads: int | None = None  # CPU threads for this run (None: torch's default); 1 is fastest on a busy machine

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch: epoch, train_loss, val_loss, val_acc
    best_epoch: int = 0
    best_val_acc: float = float("nan")
    stopped_early: bool = False
    seconds: float = 0.0


def to_tensor(images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) images → a uint8 tensor (N, C, H, W) on the device."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    return x.to(device)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def augment_batch(x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.03, jitter: float = 0.1,
                  noise: float = 0.01) -> torch.Tensor:
    """Random sub-pixel translation, brightness / contrast jitter and noise for a float batch in [0, 1].

    No flips and no rotations: a flip would move the laterality marker to the other corner (the confounder).
    Random numbers come from a CPU generator so a run is reproducible whatever the device.
    """
    n = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=gen).to(x.device)  # noqa: E731
    if max_shift > 0:
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = (r(n, 2) * 2 - 1) * (2 * max_shift)  # grid units span 2 per image side
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        contrast = 1 + (r(n, 1, 1, 1) * 2 - 1) * jitter
        bright = (r(n, 1, 1, 1) * 2 - 1) * jitter * 0.5
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + bright
    if noise > 0:
        x = x + torch.randn(x.shape, generator=gen).to(x.device) * noise
    return x.clamp_(0.0, 1.0)


@contextmanager
def cpu_threads(n: int | None):
    """Run the block with torch using n CPU threads (None: leave as is), restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def train_mode(model: nn.Module) -> None:
    """model.train(), except fully frozen stages (core.models.stages: Exemplar's blocks, an imported network's
    stages) and frozen BatchNorm layers stay in eval mode (their statistics are not updated)."""
    from core.models import stages

    model.train()
    for block in stages(model) if hasattr(model, "blocks") or hasattr(model, "net") else []:
        params = list(block.parameters())
        if params and not any(p.requires_grad for p in params):
            block.eval()
    for m in model.modules():
        if isinstance(m, BATCHNORMS) and m.affine and not m.weight.requires_grad:
            m.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Recompute BatchNorm running statistics as an exact average over x (un-augmented training images).

    With momentum 0.1 the running statistics lag the weights by ~10 steps; on a short run (a few epochs of a
    few hundred images) they are still near their initial values and eval-mode predictions collapse to one
    class. BatchNorm layers of frozen blocks (left in eval mode by train_mode) keep their statistics.
    """
    train_mode(model)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bns or x.shape[0] == 0:
        model.eval()
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    for i in range(0, x.shape[0], batch_size):
        model(_as_float(x[i:i + batch_size]))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Logits (N, K) on the CPU for uint8 or float images, batched, in eval mode."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    x = to_tensor(images, device)
    if x.shape[0] == 0:
        k = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
        return torch.zeros(0, k)
    return torch.cat([model(_as_float(x[i:i + batch_size])).float().cpu() for i in range(0, x.shape[0], batch_size)])


def predict_proba(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Softmax probabilities (N, K) as float32 numpy."""
    return torch.softmax(predict_logits(model, images, batch_size, device), dim=1).numpy().astype(np.float32)


def evaluate(model: nn.Module, arrays: DatasetArrays, splits: Sequence[str] = EVAL_SPLITS, batch_size: int = 512,
             device: str | torch.device | None = None) -> dict[str, dict]:
    """{split: classification_report} for each requested split that has rows (absent splits are left out)."""
    out = {}
    for split in splits:
        idx = arrays.split_index(split)
        if len(idx) == 0:
            continue
        proba = predict_proba(model, arrays.images[idx], batch_size, device)
        out[split] = classification_report(arrays.labels[idx], proba.argmax(1), arrays.classes, proba)
    return out


@torch.no_grad()
def _val_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    if x.shape[0] == 0:
        return float("nan"), float("nan")
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch_size):
        logits = model(_as_float(x[i:i + batch_size]))
        yb = y[i:i + batch_size]
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return loss / x.shape[0], correct / x.shape[0]


def _restore(saved, model, opt, sched, gen, device, res: "FitResult", report, total: int, epochs: int):
    """Load an earlier attempt's epoch state into model / optimiser / schedule / generators; returns
    (first epoch, step, best_acc, bad, best_state), or None when there is nothing to resume."""
    if saved is None:
        return None
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    gen.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])  # dropout draws from the global generator (CUDA's on a GPU)
    if device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    best_state = {k: v.to(device) for k, v in saved["best_state"].items()} if saved["best_state"] else None
    res.history, res.best_epoch = list(saved["history"]), int(saved["best_epoch"])
    first, step = int(saved["epoch"]) + 1, int(saved["step"])
    for row in res.history:  # the job's per-epoch chart starts again from the saved epochs
        report(step / total, f"resumed after epoch {first - 1}/{epochs} (saved by an earlier attempt)",
               metrics={k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_acc")})
    return first, step, float(saved["best_acc"]), int(saved["bad"]), best_state


def _save_epoch(folder, epoch, step, model, opt, sched, gen, device, best_state, best_acc, bad, res) -> None:
    save_epoch_state(folder, {
        "epoch": epoch, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "best_state": best_state or {}, "best_acc": best_acc, "bad": bad, "best_epoch": res.best_epoch,
        "history": res.history})


def fit(model: nn.Module, x_train: np.ndarray | torch.Tensor, y_train: np.ndarray | torch.Tensor,
        x_val: np.ndarray | torch.Tensor, y_val: np.ndarray | torch.Tensor, cfg: TrainConfig | None = None,
        device: str | torch.device = "cpu", progress: Progress | None = None,
        resume_dir: str | None = None) -> FitResult:
    """Train in place and leave the model holding the best-val-accuracy weights (in eval mode, on `device`).

    resume_dir: a folder kept across attempts of one job; each finished epoch's full state is saved there and a
    later attempt resumes after the last saved epoch (same batch order, learning-rate schedule and result).

    Early stopping: stop after `patience` epochs without a better val accuracy (no val rows: train all
    epochs, keep the last). progress(fraction, message, metrics=None) is called every `progress_every`
    batches and once per epoch with metrics {epoch, train_loss, val_loss, val_acc}.
    """
    cfg = cfg or TrainConfig()
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    device = torch.device(device)
    with cpu_threads(cfg.threads if device.type == "cpu" else None):
        return _fit(model, x_train, y_train, x_val, y_val, cfg, device, progress, resume_dir)


def _fit(model, x_train, y_train, x_val, y_val, cfg: TrainConfig, device: torch.device,
         progress: Progress | None, resume_dir: str | None = None) -> FitResult:
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device)
    xt, xv = to_tensor(x_train, device), to_tensor(x_val, device)
    yt = torch.as_tensor(np.asarray(y_train), dtype=torch.long, device=device)
    yv = torch.as_tensor(np.asarray(y_val), dtype=torch.long, device=device)
    n = xt.shape[0]
    if n == 0:
        raise ValueError("the training split is empty")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("every parameter is frozen: lower --freeze-blocks")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15,
                                                anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    res = FitResult()
    report = progress or (lambda *a, **k: None)
    first, step, best_acc, bad, best_state = _restore(load_epoch_state(resume_dir), model, opt, sched, gen, device,
                                                      res, report, total, cfg.epochs) or (1, 0, -1.0, 0, None)
    for epoch in range(first, cfg.epochs + 1):
        train_mode(model)
        perm = torch.randperm(n, generator=gen).to(device)
        run_loss, seen, te = 0.0, 0, time.monotonic()
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = resize_input(_as_float(xt[idx]), getattr(model, "input_size", None)), yt[idx]
            if cfg.augment:
                xb = augment_batch(xb, gen, cfg.max_shift, cfg.jitter, cfg.noise)
            loss = F.cross_entropy(model(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            run_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
            if (b + 1) % cfg.progress_every == 0 and b + 1 < steps_per_epoch:
                report(step / total, f"epoch {epoch}/{cfg.epochs} · batch {b + 1}/{steps_per_epoch} · "
                                     f"loss {run_loss / seen:.4f}")
        recalibrate_batchnorm(model, xt)
        val_loss, val_acc = _val_metrics(model, xv, yv, 512)
        row = {"epoch": epoch, "train_loss": run_loss / seen, "val_loss": val_loss, "val_acc": val_acc,
               "seconds": round(time.monotonic() - te, 3)}
        res.history.append(row)
        improved = math.isnan(val_acc) or val_acc > best_acc
        if improved:
            best_acc, bad, res.best_epoch = (val_acc if not math.isnan(val_acc) else best_acc), 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        stop = bad >= cfg.patience and epoch < cfg.epochs
        if resume_dir is not None and not stop and epoch < cfg.epochs:
            _save_epoch(resume_dir, epoch, step, model, opt, sched, gen, device, best_state, best_acc, bad, res)
        report(epoch / cfg.epochs if not stop else 1.0,
               f"epoch {epoch}/{cfg.epochs} · train loss {row['train_loss']:.4f} · val loss {val_loss:.4f} · "
               f"val acc {val_acc:.3f}" + (" · early stop" if stop else ""),
               metrics={k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_acc")})
        if stop:
            res.stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    res.best_val_acc = best_acc if best_acc >= 0 else float("nan")
    res.seconds = round(time.monotonic() - t0, 3)
    return res
