"""The fine-tune loop every XBL method shares: AdamW, cosine decay, per-epoch diagnostics, last weights kept.

Per epoch it records (docs/architecture.md, Definitions): ce, expl (the method's explanation term), active (share of
active reference triplets), d_pos and d_neg (mean distances of anchors to the good and bad exemplar), val_acc, val_ar,
val_ap, val_wr (GradCAM of the predicted class, τ), seconds (training only). Train and val only: test and test_shifted
are evaluated once, after the run, by the caller (docs/architecture.md, Split roles), never watched per epoch.

The last epoch's weights are kept: val shares the training confounder, so picking the best val epoch would
favour the shortcut, and test_shifted is what is reported, so it must not choose either.
The batch order depends on cfg.seed alone (its own generator), and cfg.seed seeds the method's own draws
(method.run_seed: the counterexamples' partners), so a control run with the same config sees the
same batches; FinetuneResult.order_digest fingerprints that order so a report can show it was matched.
progress(fraction, message, metrics=None) may raise to stop the run (a job's cancel).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from core.train.classifier import train_mode
from core.xbl import Exemplar, TrainSet, XBLMethod, as_float, cam as _cam

Progress = Callable[..., None]


@dataclass
class FinetuneConfig:
    epochs: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    freeze_blocks: int = 0
    train_last: int = 0  # train only the last K stages (core.models.stages); 0 = every stage
    seed: int = 0
    tau: float = 0.5
    val_limit: int = 1024  # val images used for the per-epoch AR / AP (all of them when fewer)
    progress_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalSet:
    """Images (N, C, H, W) uint8 or float, labels, optional lung / marker masks (N, H, W)."""

    x: torch.Tensor
    y: torch.Tensor
    lung: torch.Tensor | None = None
    marker: torch.Tensor | None = None


@dataclass
class FinetuneResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    order_digest: str = ""  # sha1 of every epoch's permutation of the training rows


@torch.no_grad()
def accuracy(model: nn.Module, ev: EvalSet | None, batch_size: int = 512) -> float:
    if ev is None or ev.x.shape[0] == 0:
        return float("nan")
    model.eval()
    correct = 0
    for i in range(0, ev.x.shape[0], batch_size):
        correct += int((model(as_float(ev.x[i:i + batch_size])).argmax(1) == ev.y[i:i + batch_size]).sum())
    return correct / ev.x.shape[0]


def explanation_metrics(model: nn.Module, ev: EvalSet | None, tau: float = 0.5, batch_size: int = 256,
                        limit: int | None = None) -> dict[str, float]:
    """Mean AR / AP / WR of the predicted-class GradCAM (E maps) on an eval set with lung masks (NaN without)."""
    from core.metrics.localisation import localisation_metrics

    out = {"ar": float("nan"), "ap": float("nan"), "wr": float("nan")}
    if ev is None or ev.lung is None or ev.x.shape[0] == 0:
        return out
    n = ev.x.shape[0] if not limit else min(limit, ev.x.shape[0])
    model.eval()
    cols: dict[str, list] = {k: [] for k in out}
    for i in range(0, n, batch_size):
        x = as_float(ev.x[i:min(i + batch_size, n)])
        feats, logits = _cam.features_logits(model, x, detach=True)
        with torch.enable_grad():
            cam = _cam.gradcam(feats, logits, logits.argmax(1), create_graph=False)
        e = _cam.upsample(cam.detach(), tuple(x.shape[-2:]))
        conf = ev.marker[i:i + len(x)] if ev.marker is not None else None
        m = localisation_metrics(e, ev.lung[i:i + len(x)], conf, tau)
        for k in out:
            cols[k].append(m[k].cpu())
    for k in out:
        v = torch.cat(cols[k]).numpy()
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def finetune(model: nn.Module, method: XBLMethod, train: TrainSet, good: Exemplar, bad: Exemplar,
             cfg: FinetuneConfig | None = None, val: EvalSet | None = None,
             progress: Progress | None = None) -> FinetuneResult:
    """Fine-tune `model` in place with `method` from the two exemplars; returns the per-epoch history."""
    from core.models import freeze_blocks, train_last

    cfg = cfg or FinetuneConfig()
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError("epochs and batch size must be at least 1")
    if len(train) == 0:
        raise ValueError("the training split is empty")
    device = next(model.parameters()).device
    say = progress or (lambda *a, **k: None)
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.freeze_blocks and cfg.train_last:
        raise ValueError("give --freeze-blocks or --train-last, not both")
    if cfg.freeze_blocks:
        freeze_blocks(model, cfg.freeze_blocks)
    if cfg.train_last:
        train_last(model, cfg.train_last)
    good = Exemplar(good.image.to(device), good.target, good.label, good.image_id)
    bad = Exemplar(bad.image.to(device), bad.target, bad.label, bad.image_id)
    model.eval()
    method.run_seed = int(cfg.seed)
    method.prepare(model, good, bad, train)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("every parameter is frozen: lower --freeze-blocks")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train)
    steps = math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * cfg.epochs, eta_min=cfg.lr * 0.1)
    res = FinetuneResult()
    order = hashlib.sha1()
    for epoch in range(1, cfg.epochs + 1):
        train_mode(model)
        perm = torch.randperm(n, generator=gen)
        order.update(perm.numpy().astype(np.int64).tobytes())
        perm = perm.to(device)
        sums: dict[str, float] = {}
        seen = 0
        te = time.monotonic()
        for b in range(steps):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = as_float(train.x[idx]), train.y[idx]
            loss, st = method.loss(model, x, y, idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at epoch {epoch}: lower --lr or --lam")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            seen += len(idx)
            if (b + 1) % cfg.progress_every == 0 and b + 1 < steps:
                say(((epoch - 1) * steps + b + 1) / (steps * cfg.epochs),
                    f"epoch {epoch}/{cfg.epochs} · batch {b + 1}/{steps} · ce {sums['ce'] / seen:.4f} · "
                    f"expl {sums['expl'] / seen:.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        secs = time.monotonic() - te
        res.epoch_seconds.append(secs)
        row = {"epoch": epoch, **{k: v / seen for k, v in sums.items()}}
        em = explanation_metrics(model, val, cfg.tau, limit=cfg.val_limit)
        row.update({"val_acc": accuracy(model, val), "val_ar": em["ar"], "val_ap": em["ap"], "val_wr": em["wr"],
                    "seconds": round(secs, 3)})
        res.history.append(row)
        say(epoch / cfg.epochs,
            f"epoch {epoch}/{cfg.epochs} · ce {row['ce']:.4f} · expl {row['expl']:.4f} · active "
            f"{row.get('active', float('nan')):.2f} · val acc {row['val_acc']:.3f} · val AR {row['val_ar']:.3f}",
            metrics=row)
    model.eval()
    res.order_digest = order.hexdigest()
    res.seconds = round(time.monotonic() - t0, 3)
    return res
