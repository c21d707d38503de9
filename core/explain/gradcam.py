"""GradCAM at model.feature_layer, batched: one forward and one backward (through the head only) per batch.

Fast path (models with forward_features / forward_head, i.e. every classifier of core.models): the features
come from a no-grad forward — exactly the cost of inference — and the class score is differentiated with respect
to those activations only, so the backward runs through the head alone. It equals Captum's LayerGradCam
(`gradcam_captum`, used for other modules and checked equal in tests/test_explain_gradcam.py).
Raw CAM = ReLU(Σ_k mean_ij(∂y_c/∂A_k) · A_k) at the last block's resolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from core.explain import Attribution, Target, predict_logits, resolve_target


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = None, use_captum: bool = False, **_) -> Attribution:
    if use_captum or not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return gradcam_captum(model, x, target)
    with torch.no_grad():
        feats = model.forward_features(x)
    feats = feats.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(feats)
        t = resolve_target(target, logits)
        score = logits.gather(1, t[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = (weights * feats.detach()).sum(1).clamp_min(0)
    return Attribution(cam, logits.detach())


def gradcam_captum(model: nn.Module, x: torch.Tensor, target: Target = None, layer: nn.Module | None = None) -> Attribution:
    """Captum's LayerGradCam at `layer` (default model.feature_layer); ReLU applied, not yet upsampled."""
    from captum.attr import LayerGradCam

    layer = layer if layer is not None else model.feature_layer
    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    with torch.enable_grad():
        attr = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    return Attribution(attr[:, 0].detach(), logits)
