"""Adversarial baseline: pixel-space ascent on the XAIDIFF objective without the diffusion model (DESIGN §4).

    L(x') = s_cls · log softmax(f(x'))[target] − s_close · mean|x_ref − x'|,   x' ∈ [0, 1]

maximised with Adam on the pixels (step `lr` per pixel, so about lr·255 grey levels per step), stopping a sample
once its 8-bit-quantised image has been classified as the target for `early_stop` consecutive steps.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.counterfactual import CounterfactualBatch, register
from core.counterfactual.xaidiff import frozen
from core.generative.ddpm import quantize01


@dataclass(frozen=True)
class AdversarialConfig:
    s_cls: float = 0.2
    s_close: float = 1.0
    lr: float = 0.004
    max_steps: int = 300
    early_stop: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdversarialOutput:
    images: torch.Tensor        # (B, 1, H, W) in [0, 1], 8-bit quantised
    probs: np.ndarray           # (B, C)
    prob_curve: np.ndarray      # (B, S) target probability per step (NaN after a sample stopped)
    steps: np.ndarray           # (B,) steps taken
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
    with frozen(classifier):
        for i in range(cfg.max_steps):
            logp = F.log_softmax(classifier(x), dim=1)
            l1 = (x_ref - x).abs().flatten(1).mean(1)
            obj = cfg.s_cls * logp.gather(1, target[:, None])[:, 0] - cfg.s_close * l1
            opt.zero_grad(set_to_none=True)
            (-(obj * active).sum()).backward()
            x.grad[~active] = 0
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
                q = quantize01(x)
                probs = F.softmax(classifier(q), dim=1)
                curve[active.cpu().numpy(), i] = probs.gather(1, target[:, None])[:, 0][active].cpu().numpy()
                steps[active.cpu().numpy()] += 1
                flip = probs.argmax(1) == target
                streak = torch.where(flip, streak + 1, torch.zeros_like(streak))
                done = active & (streak >= max(1, cfg.early_stop))
                result[done] = q[done]
                active &= ~done
            if progress:
                progress(i + 1, cfg.max_steps)
            if not active.any():
                break
        with torch.no_grad():
            result[active] = quantize01(x.detach())[active]
            final = F.softmax(classifier(result), dim=1).cpu().numpy()
    return AdversarialOutput(images=result.detach().cpu(), probs=final, prob_curve=curve[:, :max(1, int(steps.max()))],
                             steps=steps, seconds=time.monotonic() - t0, config=cfg.as_dict())


@register("adversarial")
def adversarial_method(classifier, x_ref, target, generator=None, device="cpu", progress=None,
                       **overrides) -> CounterfactualBatch:
    """Registry entry: overrides are AdversarialConfig fields (lr, max_steps, …); unknown options are ignored."""
    fields = AdversarialConfig.__dataclass_fields__
    cfg = AdversarialConfig(**{k: v for k, v in overrides.items() if v is not None and k in fields})
    out = pixel_adversarial(classifier, x_ref, target, cfg, device=device, progress=progress)
    return CounterfactualBatch(images=out.images, probs=out.probs, prob_curve=out.prob_curve,
                               unet_passes=np.zeros(len(out.steps), dtype=int), seconds=out.seconds,
                               curve_t=np.arange(out.prob_curve.shape[1]), config=out.config)
