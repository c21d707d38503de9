"""LTX training: pretrain() the explainer over a training set, then finetune() it per instance.

Per-instance finetuning runs one independent copy of the explainer per image, all at once: the parameters are
stacked along a new leading axis and the forward is vmapped (torch.func), the loss is the SUM of the per-image
losses (so image i's gradient only reaches copy i) and Adam is elementwise, which makes a batch of N exactly N
separate finetunings. Each image's mask is taken at the step (0 = the pretrained explainer, …, k) with the
lowest training loss. With the "sample" masking (core.ltx.loss) every step's gradient uses a fresh noise pattern,
and the step is chosen by the loss under one fixed pattern (drawn from `seed`), so that steps are compared alike.
finetune() gets images, classes and hyper-parameters only: no labels, no ground-truth masks, no metric, so the
reported faithfulness or localisation cannot leak into the choice.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from core.ltx.loss import ALPHA, MASKING, ltx_loss, mask_noise

PRETRAIN_LR = 1e-3
FINETUNE_LR = 1e-3
FINETUNE_STEPS = 25
Progress = Callable[..., None]


@dataclass
class FinetuneResult:
    masks: torch.Tensor       # (N, 1, H, W) each image's mask at its chosen step
    best_step: torch.Tensor   # (N,) the chosen step per image (0 = pretrained explainer)
    losses: torch.Tensor      # (N, steps + 1) training loss per image and step
    target: torch.Tensor      # (N,) the class each mask explains
    noise: torch.Tensor | None = None  # the fixed pattern the choosing loss was computed with (None: soft)


def _frozen(classifier: nn.Module):
    from core.explain import explaining  # eval mode, parameters frozen, in-place ReLUs off; restored afterwards

    return explaining(classifier)


def _batch(images, idx, device) -> torch.Tensor:
    """Images as (N, C, H, W) float in [0, 1] on the device, from uint8 / float numpy or a tensor."""
    b = images[idx]
    t = torch.from_numpy(np.ascontiguousarray(b)) if isinstance(b, np.ndarray) else b
    t = t.to(device)
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    return t[:, None] if t.dim() == 3 else t


def pretrain(explainer: nn.Module, classifier: nn.Module, images, *, epochs: int = 10, batch_size: int = 64,
             lr: float = PRETRAIN_LR, alpha: float = ALPHA, masking: str = MASKING, val_images=None, seed: int = 0,
             device: str | torch.device | None = None, progress: Progress | None = None) -> list[dict]:
    """Train the explainer on `images` (uint8 (N, H, W) / float (N, C, H, W), numpy or torch) against the frozen
    classifier's own predictions. Returns one record per epoch: epoch, loss, ce, mask_mean, keep (share of masked
    images still classified as the original prediction) and the same on val_images when given (val_*).

    progress(fraction, message, metrics=record) is called after every epoch (and with a message every ~50 steps).
    The explainer remembers alpha and masking (attributes), so finetuning uses the same objective.
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    dev = torch.device(device) if device is not None else next(classifier.parameters()).device
    explainer.to(dev)
    classifier.to(dev)
    n = len(images)
    if n == 0:
        raise ValueError("no images to pretrain on")
    g = torch.Generator().manual_seed(int(seed))
    gn = torch.Generator(device=dev).manual_seed(int(seed) + 1)
    mask_noise(torch.empty(1, 1, 1, 1, device=dev), masking)  # refuse an unknown masking before any work
    opt = torch.optim.Adam(explainer.parameters(), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    say = progress or (lambda *a, **k: None)
    history: list[dict] = []
    t0 = time.monotonic()
    with _frozen(classifier):
        for ep in range(1, epochs + 1):
            explainer.train()
            order = torch.randperm(n, generator=g).numpy()
            tot = {"loss": 0.0, "ce": 0.0, "mask_mean": 0.0, "keep": 0.0}
            for i, s in enumerate(range(0, n, batch_size)):
                x = _batch(images, order[s: s + batch_size], dev)
                with torch.no_grad():
                    target = classifier(x).argmax(1)
                m = explainer(x)
                L = ltx_loss(classifier, x, m, target, alpha, mask_noise(m, masking, gn))
                opt.zero_grad(set_to_none=True)
                L.loss.mean().backward()
                opt.step()
                _accumulate(tot, L, target)
                if i % 5 == 0 and i:  # progress checks the job's cancel flag: often enough to stop within ~2 s
                    say((ep - 1 + i / steps_per_epoch) / epochs, f"epoch {ep}/{epochs}: step {i}/{steps_per_epoch}")
            rec = {"epoch": ep, **{k: round(v / n, 5) for k, v in tot.items()}}
            if val_images is not None and len(val_images):
                rec.update({f"val_{k}": v for k, v in evaluate_loss(explainer, classifier, val_images, alpha=alpha,
                                                                    masking=masking, batch_size=batch_size,
                                                                    device=dev).items()})
            rec["seconds"] = round(time.monotonic() - t0, 2)
            history.append(rec)
            say(ep / epochs, f"epoch {ep}/{epochs}: loss {rec['loss']:.3f} (CE {rec['ce']:.3f}, "
                             f"mask mean {rec['mask_mean']:.3f}, keep {rec['keep']:.2f})", metrics=rec)
    explainer.eval()
    explainer.alpha, explainer.masking = float(alpha), masking
    return history


def _accumulate(tot: dict, L, target) -> None:
    tot["loss"] += float(L.loss.detach().sum())
    tot["ce"] += float(L.ce.sum())
    tot["mask_mean"] += float(L.mask_mean.sum())
    tot["keep"] += float((L.logits.argmax(1) == target).float().sum())


@torch.no_grad()
def evaluate_loss(explainer: nn.Module, classifier: nn.Module, images, *, alpha: float = ALPHA,
                  masking: str = MASKING, batch_size: int = 128, device=None, seed: int = 0) -> dict:
    """Mean loss, ce, mask_mean and keep of the explainer (no finetuning) over images (sampled masks: a fixed
    seed, so two calls compare alike)."""
    dev = torch.device(device) if device is not None else next(explainer.parameters()).device
    was = explainer.training
    explainer.eval()
    tot = {"loss": 0.0, "ce": 0.0, "mask_mean": 0.0, "keep": 0.0}
    n = len(images)
    gn = torch.Generator(device=dev).manual_seed(int(seed))
    with _frozen(classifier):
        for s in range(0, n, batch_size):
            x = _batch(images, np.arange(s, min(n, s + batch_size)), dev)
            target = classifier(x).argmax(1)
            m = explainer(x)
            _accumulate(tot, ltx_loss(classifier, x, m, target, alpha, mask_noise(m, masking, gn)), target)
    explainer.train(was)
    return {k: round(v / max(n, 1), 5) for k, v in tot.items()}


def finetune(explainer: nn.Module, classifier: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
             steps: int = FINETUNE_STEPS, lr: float = FINETUNE_LR, alpha: float = ALPHA, masking: str = MASKING,
             seed: int = 0, progress: Progress | None = None) -> FinetuneResult:
    """Finetune one copy of the explainer per image of x (N, C, H, W) for `steps` Adam steps on the LTX loss
    against `target` (default argmax f(x)); each image's mask is the one at its lowest-loss step. The explainer
    passed in is left unchanged. Noise patterns (sampled masking) are shared by all images of the batch, so an
    image gets the same mask alone as in any batch."""
    from torch.func import functional_call, vmap

    if steps < 0:
        raise ValueError("steps must be ≥ 0")
    n = x.shape[0]
    dev = x.device
    explainer = explainer.to(dev)
    was = explainer.training
    explainer.eval()
    say = progress or (lambda *a, **k: None)
    try:
        with _frozen(classifier), torch.enable_grad():
            if target is None:
                with torch.no_grad():
                    target = classifier(x).argmax(1)
            target = torch.as_tensor(target, dtype=torch.long, device=dev).reshape(-1).expand(n)
            params = {k: p.detach().unsqueeze(0).repeat(n, *([1] * p.dim())).requires_grad_(True)
                      for k, p in explainer.named_parameters()}
            buffers = dict(explainer.named_buffers())

            def one(p, xi):
                return functional_call(explainer, (p, buffers), (xi[None],))[0]

            fwd = vmap(one)
            gn = torch.Generator(device=dev).manual_seed(int(seed))
            shape = torch.empty(n, 1, *x.shape[-2:], device=dev)
            choose_noise = mask_noise(shape, masking, gn, shared=True)
            opt = torch.optim.Adam(list(params.values()), lr=lr)
            best_loss = torch.full((n,), float("inf"), device=dev)
            best_mask = torch.zeros(n, 1, *x.shape[-2:], device=dev)
            best_step = torch.zeros(n, dtype=torch.long, device=dev)
            losses = []
            for step in range(steps + 1):
                m = fwd(params, x)
                if choose_noise is None:
                    L = ltx_loss(classifier, x, m, target, alpha)
                    cur = L.loss.detach()
                else:
                    with torch.no_grad():
                        cur = ltx_loss(classifier, x, m.detach(), target, alpha, choose_noise).loss
                losses.append(cur)
                better = cur < best_loss
                best_loss = torch.where(better, cur, best_loss)
                best_mask = torch.where(better[:, None, None, None], m.detach(), best_mask)
                best_step = torch.where(better, torch.full_like(best_step, step), best_step)
                if step == steps:
                    break
                if choose_noise is not None:
                    L = ltx_loss(classifier, x, m, target, alpha, mask_noise(m, masking, gn, shared=True))
                opt.zero_grad(set_to_none=True)
                L.loss.sum().backward()
                opt.step()
                say((step + 1) / max(steps, 1), f"finetune step {step + 1}/{steps}")
    finally:
        explainer.train(was)
    return FinetuneResult(best_mask, best_step, torch.stack(losses, 1), target.clone(), choose_noise)
