"""Differentiable GradCAM for explanation losses: maps that keep their graph (create_graph) to the weights.

core.explain's GradCAM detaches (it is for display). Here the features come from the training forward pass, the
class scores are differentiated with respect to them with create_graph=True, so a loss on the map trains both
the feature blocks and the head. Only the head is differentiated twice: the extra cost is small.

- gradcam(feats, logits, target): ReLU(Σ_k mean_ij(∂y_t/∂A_k) · A_k), (N, h, w), the map of
docs/architecture.md, Definitions.
- image_at / l2n / upsample: the ⊙ x↓ factor, L2 normalisation and the display map E.
- features_logits(model, x): the grid at the target layer and the logits, through the one hook path.
- cam_logits(model, feats, logits): the head without dropout, the one forward mode of every CAM (training anchors, the
  reference anchors p / q and the diagnostics), so an image's anchor does not depend on a dropout draw.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.models.target import target_forward

EPS = 1e-8


def gradcam(feats: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, create_graph: bool = True,
            relu: bool = True) -> torch.Tensor:
    """(n, h, w) GradCAM of class target[i] for image i < n = len(target) (the first n rows of a larger batch:
    feats and logits may hold more images, e.g. counterexamples); differentiable when create_graph."""
    n = target.numel()
    score = logits[:n].gather(1, target.reshape(-1, 1).to(logits.device)).sum()
    (g,) = torch.autograd.grad(score, feats, create_graph=create_graph, retain_graph=True)
    cam = (g[:n].mean(dim=(2, 3), keepdim=True) * feats[:n]).sum(1)
    return cam.clamp_min(0) if relu else cam


def image_at(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Images (N, C, H, W) averaged over channels and area-downsampled to the map size: (N, h, w)."""
    return F.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), hw)[:, 0]


def l2n(v: torch.Tensor) -> torch.Tensor:
    """Flatten to (N, D) and divide each row by its L2 norm (a zero row stays zero)."""
    v = v.flatten(1)
    return v / v.norm(dim=1, keepdim=True).clamp_min(EPS)


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) → (N, H, W) bilinear, each map divided by its own max (0 where the max is 0): E of
    docs/architecture.md, Definitions."""
    e = F.interpolate(m[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    mx = e.amax(dim=(1, 2), keepdim=True)
    return torch.where(mx > 0, e / mx.clamp_min(EPS), torch.zeros_like(e))


def features_logits(model, x: torch.Tensor, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward read at the target layer (core.models.target): (grid (N, C, h, w), logits). detach=True runs
    the layers before the target without a graph (display maps, reference anchors, evaluation). A network without
    a separable head (an imported one) trains with its dropout off, so its training CAMs are in the reference
    anchors' mode (see cam_logits)."""
    if detach or hasattr(model, "forward_head"):
        return target_forward(model, x, detach=detach)
    with no_dropout(model):
        return target_forward(model, x)


@contextmanager
def no_dropout(module: nn.Module):
    """Dropout layers of `module` in eval mode inside the block (BatchNorm and the rest untouched)."""
    drops = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.training]
    for m in drops:
        m.eval()
    try:
        yield
    finally:
        for m in drops:
            m.train()


def cam_logits(model, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class scores for a training CAM: Exemplar's own classifiers replay their head on the same features with
    dropout off (the reference anchors' mode); an imported network has no separable head, so its CAM reads the
    training forward's own logits, which features_logits computed with dropout off."""
    head = getattr(model, "forward_head", None)
    if head is None:
        return logits
    with no_dropout(model):
        return head(feats)
