"""The LTX objective (DESIGN.md §4): L = CE(f(x ⊙ m), c) + α · mean(m), c = argmax f(x) unless given.

The cross-entropy term asks the masked image to keep the classifier's decision; the mask term asks the mask to
keep as little as possible. Losses are returned per image so that per-instance finetuning can choose each
image's step by its own loss.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

ALPHA = 2.0  # weight of the mask mean; chosen with bench/methods.py (see its docstring)


class LTXLoss(NamedTuple):
    loss: torch.Tensor   # (N,) CE + α · mask mean
    ce: torch.Tensor     # (N,)
    mask_mean: torch.Tensor  # (N,)
    logits: torch.Tensor  # (N, K) of the masked images (detached)


def apply_mask(x: torch.Tensor, m: torch.Tensor, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """x ⊙ m + fill · (1 − m): the kept pixels, the rest faded to `fill` (0 as in the paper's x ⊙ m)."""
    if isinstance(fill, (int, float)) and fill == 0:
        return x * m
    return x * m + fill * (1 - m)


def ltx_loss(classifier: nn.Module, x: torch.Tensor, m: torch.Tensor, target: torch.Tensor,
             alpha: float = ALPHA) -> LTXLoss:
    """Per-image LTX loss of masks m (N, 1, H, W) for images x (N, C, H, W) and classes target (N,)."""
    logits = classifier(apply_mask(x, m))
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    mm = m.flatten(1).mean(1)
    return LTXLoss(ce + alpha * mm, ce.detach(), mm.detach(), logits.detach())
