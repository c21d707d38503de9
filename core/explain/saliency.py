"""Saliency (Captum): |∂y_c/∂x| summed over channels."""
from __future__ import annotations

import torch

from core.explain import Attribution, Target, channel_sum, predict_logits, resolve_target


def saliency(model, x: torch.Tensor, target: Target = None, **_) -> Attribution:
    from captum.attr import Saliency

    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    with torch.enable_grad():
        attr = Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=True)
    return Attribution(channel_sum(attr.detach()), logits)
