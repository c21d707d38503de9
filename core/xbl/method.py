"""The XBL method base class and the shared pieces of every method: exemplars, the train set, the reference
triplet, GradCAM anchors and the exemplar's map (docs/architecture.md, "Retraining and its evidence"). The registry of methods is
core.xbl (torch-free, so the CLI can name them without importing torch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.xbl import cam as _cam

REFERENCE_MARGIN = 0.1  # margin of the reference triplet diagnostics for methods without one (= exbl_cf's)


@dataclass
class Exemplar:
    """One clicked explanation: the image (C, H, W) in [0, 1] and the class whose map the user judged."""

    image: torch.Tensor
    target: int
    label: int | None = None
    image_id: int | None = None


@dataclass
class TrainSet:
    """The fine-tuning split on the device: uint8 images (N, C, H, W), labels (N,), optional lung masks (N, H, W)."""

    x: torch.Tensor
    y: torch.Tensor
    lung: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


class XBLMethod:
    """Base: plain CE plus the reference triplet diagnostics; subclasses add their explanation term."""

    name = "base"
    needs_masks = False
    defaults: dict[str, Any] = {}

    def __init__(self, **settings: Any):
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name} has no setting(s) {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(self.defaults) or 'none'}")
        self.settings = {**self.defaults, **{k: v for k, v in settings.items() if v is not None}}
        for k, v in self.settings.items():
            setattr(self, k, v)
        self.run_seed = 0  # the fine-tune's seed (finetune() sets it): seeds everything random in the method
        self.p_ref: torch.Tensor | None = None
        self.q_ref: torch.Tensor | None = None
        self.margin_ref = float(self.settings.get("margin", REFERENCE_MARGIN))

    # -- set-up ---------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, good: Exemplar, bad: Exemplar, train: TrainSet) -> None:
        """Fixed exemplar targets, computed once with the parent model (eval mode, no graph)."""
        self.p_ref = reference_anchor(model, good)
        self.q_ref = reference_anchor(model, bad)

    # -- one batch ------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
        feats, logits = _cam.features_logits(model, x)
        ce = F.cross_entropy(logits, y)
        stats = {"ce": ce.detach(), "expl": torch.zeros((), device=x.device)}
        stats.update(self.diagnostics(model, feats, logits, x, y))
        return ce, stats

    def diagnostics(self, model: nn.Module, feats: torch.Tensor, logits: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> dict:
        """The reference triplet's d+, d−, active share on this batch (no graph; CAM head without dropout)."""
        cam = _cam.gradcam(feats, _cam.cam_logits(model, feats, logits), y, create_graph=False)
        a = _cam.l2n(cam * _cam.image_at(x, cam.shape[-2:])).detach()
        return triplet_stats(a, self.p_ref, self.q_ref, self.margin_ref)


def triplet(a: torch.Tensor, p: torch.Tensor, q: torch.Tensor, margin: float) -> tuple[torch.Tensor, dict]:
    """Mean hinge max(‖a−p‖² − ‖a−q‖² + m, 0) over rows of a, with its stats (d_pos, d_neg, active)."""
    dp = (a - p).pow(2).sum(1)
    dn = (a - q).pow(2).sum(1)
    h = (dp - dn + margin).clamp_min(0)
    return h.mean(), {"d_pos": dp.mean().detach(), "d_neg": dn.mean().detach(),
                      "active": (h > 0).float().mean().detach()}


def triplet_stats(a, p, q, margin) -> dict:
    with torch.no_grad():
        return triplet(a, p, q, margin)[1]


def _eval_forward(model: nn.Module, ex: Exemplar):
    """(x, target-layer grid that requires grad, logits) for one exemplar, in eval mode, no graph before it."""
    x = ex.image[None].float().to(next(model.parameters()).device)
    was = model.training
    model.eval()
    try:
        feats, logits = _cam.features_logits(model, x, detach=True)
        return x, feats, logits
    finally:
        model.train(was)


def reference_anchor(model: nn.Module, ex: Exemplar, times_image: bool = True) -> torch.Tensor:
    """n(GradCAM_target ⊙ x↓) of one exemplar (1, D), fixed; n(GradCAM_target) with times_image=False."""
    x, feats, logits = _eval_forward(model, ex)
    with torch.enable_grad():
        cam = _cam.gradcam(feats, logits, torch.tensor([ex.target], device=x.device), create_graph=False)
    return _cam.l2n(cam * _cam.image_at(x, cam.shape[-2:]) if times_image else cam).detach()


def anchors(cam: torch.Tensor, x: torch.Tensor, times_image: bool = True) -> torch.Tensor:
    """Training anchors: n(CAM ⊙ x↓) (the eXBL anchor, docs/architecture.md "Retraining and its evidence") or
    n(CAM) — graph kept."""
    return _cam.l2n(cam * _cam.image_at(x, cam.shape[-2:]) if times_image else cam)


def training_anchors(model: nn.Module, feats: torch.Tensor, logits: torch.Tensor, x: torch.Tensor,
                     y: torch.Tensor, times_image: bool = True) -> torch.Tensor:
    """Anchors of the first len(y) images of a training batch from its features (cam.cam_logits' mode)."""
    cam = _cam.gradcam(feats, _cam.cam_logits(model, feats, logits), y, create_graph=True)
    return anchors(cam, x, times_image)


def exemplar_map(model: nn.Module, ex: Exemplar) -> torch.Tensor:
    """The exemplar's GradCAM map E (H, W) in [0, 1] as the user saw it (docs/architecture.md, Definitions)."""
    x, feats, logits = _eval_forward(model, ex)
    with torch.enable_grad():
        cam = _cam.gradcam(feats, logits, torch.tensor([ex.target], device=x.device), create_graph=False)
    return _cam.upsample(cam.detach(), tuple(x.shape[-2:]))[0]


def dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Binary dilation of (H, W) or (N, H, W) masks by a (2px+1)² square."""
    if px <= 0:
        return mask.float()
    m = mask.float()
    squeeze = m.dim() == 2
    m = m[None, None] if squeeze else m[:, None]
    m = F.max_pool2d(m, 2 * px + 1, stride=1, padding=px)
    return m[0, 0] if squeeze else m[:, 0]
