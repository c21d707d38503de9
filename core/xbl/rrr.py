"""Right for the Right Reasons (Ross et al. 2017) with every image's ground-truth mask: the upper bound.

L = CE + λ · mean_i Σ_pixels (A_i ⊙ ∂/∂x_i Σ_k log p_k(x_i))², A_i = 1 − lung mask of image i (everything
outside the relevant region must not move any class probability). Needs a mask for every training image, so
it is the comparison point for what the two-click methods could reach, not a two-click method.
Input gradients are taken with create_graph (double backprop through the whole network: ~2–3× a CE step).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.xbl import XBLMethod, cam as _cam


def input_gradient_penalty(model, x: torch.Tensor, y: torch.Tensor, region: torch.Tensor):
    """(CE, penalty, feats, logits): penalty = mean_i Σ (region ⊙ ∂Σ_k log p_k/∂x)², region (N|1, H, W) in [0,1]."""
    x = x.detach().requires_grad_(True)
    feats, logits = _cam.features_logits(model, x)
    ce = F.cross_entropy(logits, y)
    lp = F.log_softmax(logits, 1).sum()
    (g,) = torch.autograd.grad(lp, x, create_graph=True)
    pen = (g * region[:, None]).pow(2).flatten(1).sum(1)
    return ce, pen, feats, logits


class RRR(XBLMethod):
    """Classic RRR: input-gradient penalty outside each image's own lung mask."""

    name = "rrr"
    needs_masks = True
    defaults = {"lam": 0.001}

    def prepare(self, model, good, bad, train):
        super().prepare(model, good, bad, train)
        if train.lung is None:
            raise ValueError("rrr needs a lung mask for every training image")
        self.outside = train.lung  # uint8 (N, H, W); 1 − mask per batch

    def loss(self, model, x, y, idx):
        region = 1.0 - self.outside[idx].float()
        ce, pen, feats, logits = input_gradient_penalty(model, x, y, region)
        term = pen.mean()
        st = {"ce": ce.detach(), "expl": term.detach()}
        st.update(self.diagnostics(model, feats, logits, x.detach(), y))
        return ce + float(self.lam) * term, st
