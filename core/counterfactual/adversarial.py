"""Adversarial baseline: pixel-space ascent on the XAIDIFF objective without the diffusion model
(docs/architecture.md, Definitions).

    L(x') = s_cls · log softmax(f(x'))[target] − s_close · mean|x_ref − x'|,   x' ∈ [0, 1]

maximised with Adam on the pixels (step `lr` per pixel, so about lr·255 grey levels per step) for `max_steps`
steps, like the diffusion guidance runs its steps: the objective, not a stopping rule, decides how far the image
moves (early_stop > 0 instead stops a sample once its 8-bit image has been the target for that many steps, with
p(target) ≥ min_prob). As in Wachter et al.'s counterfactual search, a sample not flipped at every
`escalate_every`-th step gets its s_cls doubled (a flat classifier would otherwise leave the closeness term in charge
and nothing would move).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.counterfactual import CounterfactualBatch
from core.counterfactual.xaidiff import frozen
from core.generative.ddpm import quantize01


@dataclass(frozen=True)
class AdversarialConfig:
    s_cls: float = 0.2
    s_close: float = 1.0
    lr: float = 0.004
    max_steps: int = 100
    early_stop: int = 0       # 0: run all max_steps; k > 0: stop a sample once flipped for k steps
    min_prob: float = 0.0     # with early_stop: stop only once p(target) also reaches this
    escalate_every: int = 20  # double s_cls of a sample still not flipped after every this many steps (0: never)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdversarialOutput:
    images: torch.Tensor        # (B, 1, H, W) in [0, 1], 8-bit quantised
    probs: np.ndarray           # (B, C)
    prob_curve: np.ndarray      # (B, S) target probability per step (NaN after a sample stopped)
    steps: np.ndarray           # (B,) steps taken
    s_cls_final: np.ndarray | None = None  # (B,) s_cls after escalation
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


def pixel_adversarial(classifier, x_ref: torch.Tensor, target: torch.Tensor, cfg: AdversarialConfig = AdversarialConfig(),
                      device: str | torch.device = "cpu", progress=None) -> AdversarialOutput:
    t0 = time.monotonic()
    x_ref = x_ref.to(device).float()
    target = target.to(device).long()
    B = x_ref.shape[0]
    x = x_ref.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    curve = np.full((B, cfg.max_steps), np.nan)
    steps = np.zeros(B, dtype=int)
    streak = torch.zeros(B, dtype=torch.long, device=device)
    active = torch.ones(B, dtype=torch.bool, device=device)
    result = x_ref.clone()
    s_cls = torch.full((B,), float(cfg.s_cls), device=device)
    with frozen(classifier):
        for i in range(cfg.max_steps):
            # one forward per step on the 8-bit image (straight-through rounding): its prediction decides the
            # stop, its gradient drives the step
            q = x + (quantize01(x) - x).detach()
            logits = classifier(q)
            with torch.no_grad():
                probs = F.softmax(logits, dim=1)
                curve[active.cpu().numpy(), i] = probs.gather(1, target[:, None])[:, 0][active].cpu().numpy()
                steps[active.cpu().numpy()] += 1
                flip = (probs.argmax(1) == target) & (probs.gather(1, target[:, None])[:, 0] >= cfg.min_prob)
                streak = torch.where(flip, streak + 1, torch.zeros_like(streak))
                done = active & (streak >= cfg.early_stop) if cfg.early_stop > 0 else torch.zeros_like(active)
                result[done] = q.detach()[done]
                active &= ~done
                if cfg.escalate_every and (i + 1) % cfg.escalate_every == 0:
                    s_cls = torch.where(active & (streak == 0), s_cls * 2.0, s_cls)
            if not active.any():
                break
            logp = F.log_softmax(logits, dim=1)
            l1 = (x_ref - q).abs().flatten(1).mean(1)
            obj = s_cls * logp.gather(1, target[:, None])[:, 0] - cfg.s_close * l1
            opt.zero_grad(set_to_none=True)
            (-(obj * active).sum()).backward()
            x.grad[~active] = 0
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            if progress:
                progress(i + 1, cfg.max_steps)
        with torch.no_grad():
            result[active] = quantize01(x.detach())[active]
            final = F.softmax(classifier(result), dim=1).cpu().numpy()
    return AdversarialOutput(images=result.detach().cpu(), probs=final, prob_curve=curve[:, :max(1, int(steps.max()))],
                             steps=steps, s_cls_final=s_cls.cpu().numpy(), seconds=time.monotonic() - t0,
                             config=cfg.as_dict())


def adversarial_method(classifier, x_ref, target, generator=None, device="cpu", progress=None,
                       **overrides) -> CounterfactualBatch:
    """Registry entry: overrides are AdversarialConfig fields (lr, max_steps, …); unknown options are ignored."""
    fields = AdversarialConfig.__dataclass_fields__
    cfg = AdversarialConfig(**{k: v for k, v in overrides.items() if v is not None and k in fields})
    out = pixel_adversarial(classifier, x_ref, target, cfg, device=device, progress=progress)
    return CounterfactualBatch(images=out.images, probs=out.probs, prob_curve=out.prob_curve,
                               unet_passes=np.zeros(len(out.steps), dtype=int), seconds=out.seconds,
                               curve_t=np.arange(out.prob_curve.shape[1]),
                               config={**out.config, "s_cls_final": out.s_cls_final.tolist()})
