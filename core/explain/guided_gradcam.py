"""Guided GradCAM (Captum) at model.feature_layer: guided backprop × GradCAM, |·| summed over channels."""
from __future__ import annotations

import warnings

import torch

from core.explain import Attribution, Target, channel_sum, predict_logits, resolve_target


def guided_gradcam(model, x: torch.Tensor, target: Target = None, **_) -> Attribution:
    from captum.attr import GuidedGradCam

    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = GuidedGradCam(model, model.feature_layer).attribute(x.clone().requires_grad_(True), target=t)
    return Attribution(channel_sum(attr.detach()), logits)
