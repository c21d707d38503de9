"""The LTX objective (docs/architecture.md, Definitions): L = CE(f(x ⊙ m̃), c) + α · mean(m), c = argmax f(x) unless
given.

The cross-entropy term asks the masked image to keep the classifier's decision; the mask term asks the mask to
keep as little as possible. Losses are returned per image so that per-instance finetuning can choose each
image's step by its own loss.

Masking (`masking`): "soft" (default) is the paper's m̃ = m (x ⊙ m): the method named `ltx`. "sample" is our
variant, named `ltx_sampled` (services.explanations.ltx): the classifier sees a binary sample m̃ = 1[m > u], u ~ U(0, 1) per
pixel, with the straight-through gradient of m: E[m̃] = m, and every pixel is either kept or removed, as the
POS/NEG/DEL/INS perturbations do. On SynthCXR soft masking can degenerate (a small CNN keeps its decision on a
uniformly dimmed image, so m ≈ 0.05 everywhere ranks the pixels poorly); sampling removes that incentive. Which
of the two to show is a user's choice on val (bench/methods.py --sweep-masking), not a silent default.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

MASKING = "soft"  # the paper's: `ltx`; "sample" is the `ltx_sampled` variant
MASKINGS = ("soft", "sample")
# weight of the mask mean per masking, each chosen on the val split with bench/methods.py --sweep-alpha (see there)
ALPHAS = {"soft": 0.25, "sample": 2.0}
ALPHA = ALPHAS[MASKING]


class LTXLoss(NamedTuple):
    loss: torch.Tensor   # (N,) CE + α · mask mean
    ce: torch.Tensor     # (N,)
    mask_mean: torch.Tensor  # (N,)
    logits: torch.Tensor  # (N, K) of the masked images (detached)


def apply_mask(x: torch.Tensor, m: torch.Tensor, fill: float | torch.Tensor = 0.0,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """x ⊙ m̃ + fill · (1 − m̃): the kept pixels, the rest faded to `fill` (0 as in the paper's x ⊙ m).

    noise None: m̃ = m (soft). noise u (broadcastable to m, values in [0, 1)): m̃ = 1[m > u] forward, gradient of m
    backward (straight-through)."""
    if noise is not None:
        m = (m > noise).to(m.dtype) + m - m.detach()
    if isinstance(fill, (int, float)) and fill == 0:
        return x * m
    return x * m + fill * (1 - m)


def mask_noise(m: torch.Tensor, masking: str, generator: torch.Generator | None = None,
               shared: bool = False) -> torch.Tensor | None:
    """The u of a "sample" masking for masks m (N, 1, H, W): one per pixel and image, or one pattern for every
    image (shared); None for "soft"."""
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {', '.join(MASKINGS)}, got {masking!r}")
    if masking == "soft":
        return None
    shape = (1, *m.shape[1:]) if shared else tuple(m.shape)
    u = torch.rand(shape, generator=generator, device=m.device if generator is None else generator.device)
    return u.to(m.device).expand_as(m) if shared else u.to(m.device)


def ltx_loss(classifier: nn.Module, x: torch.Tensor, m: torch.Tensor, target: torch.Tensor,
             alpha: float = ALPHA, noise: torch.Tensor | None = None) -> LTXLoss:
    """Per-image LTX loss of masks m (N, 1, H, W) for images x (N, C, H, W) and classes target (N,); with noise,
    the classifier sees the binary sample 1[m > noise] (see apply_mask)."""
    logits = classifier(apply_mask(x, m, noise=noise))
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    mm = m.flatten(1).mean(1)
    return LTXLoss(ce + alpha * mm, ce.detach(), mm.detach(), logits.detach())
