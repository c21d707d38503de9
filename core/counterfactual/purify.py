"""Statistics that tell pixel-space adversarial examples from real images and counterfactuals.

- `purification_drop`: noise an image to a small timestep t_p and denoise it back to t = 0 with a strided DDIM
  (diffusion purification); the statistic is the drop of the classifier's probability of the image's own predicted
  class. An adversarial perturbation is high-frequency and low-amplitude: the round trip removes it and the
  prediction falls back; a real image or a sample on the data manifold keeps its prediction.
- `low_t_bits`: the part of a bits/dim result from the terms with t ≤ t_max (the decoder and the first KL terms),
  where an off-manifold high-frequency perturbation costs most. Free: bits/dim already evaluates those terms.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.generative.ddpm import from_model, to_model


def low_t_bits(bpd_result, t_max: int = 20) -> np.ndarray:
    """Σ_k w_k·term_k over the evaluated timesteps ≤ t_max (bits/dim), per image."""
    keep = np.asarray(bpd_result.timesteps) <= t_max
    return (np.asarray(bpd_result.terms)[:, keep] * np.asarray(bpd_result.weights)[keep]).sum(1)


@torch.no_grad()
def purify(unet, scheduler, images01: torch.Tensor, t_p: int = 100, steps: int = 5, seed: int = 0,
           device="cpu") -> torch.Tensor:
    """Diffusion purification: q(x_{t_p} | x) with a seeded draw, then a strided DDIM of `steps` passes to t = 0."""
    from core.counterfactual.xaidiff import _ddim_prev, _x0_hat, finish_timesteps

    acp = scheduler.alphas_cumprod
    x0 = to_model(images01.to(device).float())
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g).to(device)
    a = float(acp[t_p])
    x = a ** 0.5 * x0 + (1 - a) ** 0.5 * noise
    ts = finish_timesteps(t_p, steps)
    for i, t in enumerate(ts):
        prev_t = ts[i + 1] if i + 1 < len(ts) else -1
        eps = unet(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)).sample
        x = _ddim_prev(acp, t, prev_t, x, _x0_hat(acp, t, x, eps))
    return from_model(x).clamp(0, 1)


@torch.no_grad()
def purification_drop(unet, scheduler, classifier, images01: torch.Tensor, t_p: int = 100, steps: int = 5,
                      seed: int = 0, device="cpu", batch_size: int = 32) -> np.ndarray:
    """p(own class | x) − p(own class | purified x) per image; high for adversarial examples."""
    out = []
    for s in range(0, len(images01), batch_size):
        xb = images01[s:s + batch_size].to(device).float()
        p0 = F.softmax(classifier(xb), 1)
        own = p0.argmax(1, keepdim=True)
        p1 = F.softmax(classifier(purify(unet, scheduler, xb, t_p, steps, seed, device)), 1)
        out.append((p0.gather(1, own) - p1.gather(1, own))[:, 0].cpu().numpy())
    return np.concatenate(out)


def auroc(negatives, positives) -> float:
    """Area under the ROC curve of a statistic where positives should score higher (ties count half)."""
    a, b = np.asarray(negatives, float), np.asarray(positives, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    gt = (b[:, None] > a[None, :]).mean()
    eq = (b[:, None] == a[None, :]).mean()
    return float(gt + 0.5 * eq)
