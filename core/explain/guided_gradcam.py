"""Guided GradCAM (Captum) at the target layer (convolutional layouts only): guided backprop × GradCAM, |·| summed over channels."""
from __future__ import annotations

import warnings

import torch

from core.explain import Attribution, Target, channel_sum, predict_logits, resolve_target
from core.models.target import target_module, target_spec


def applies(model) -> str | None:
    """Guided backprop × GradCAM through Captum's layer hook: a convolutional (NCHW) target layer only."""
    if target_spec(model).layout != "nchw":
        return ("does not apply: guided GradCAM needs a convolutional target layer, this network's is a "
                f"{target_spec(model).layout} layer (use gradcam)")
    return None


def guided_gradcam(model, x: torch.Tensor, target: Target = None, **_) -> Attribution:
    from captum.attr import GuidedGradCam

    reason = applies(model)
    if reason:
        raise ValueError(f"guided_gradcam {reason}")
    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = GuidedGradCam(model, target_module(model)).attribute(x.clone().requires_grad_(True), target=t)
    return Attribution(channel_sum(attr.detach()), logits)
