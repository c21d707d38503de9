"""GradCAM at the model's target layer, batched: one forward and one backward (through the layers after the target
only) per batch, for any network (core.models.target: Exemplar's own, torchvision, timm, the user's factory).

The layers before the target run without a graph — exactly the cost of inference — and the class score is
differentiated with respect to the target grid only. It equals Captum's LayerGradCam (`gradcam_captum`) and
pytorch-grad-cam on the same layer (tests/test_explain_gradcam.py, tests/test_byom_matrix.py).
Raw CAM = ReLU(Σ_k mean_ij(∂y_c/∂A_k) · A_k) at the target layer's resolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from core.explain import Attribution, Target, predict_logits, resolve_target
from core.models.target import target_forward, target_module

# the layers before the target run without a graph and those after it read a copy of the grid (core.models.target),
# so in-place ReLUs may stay in place (explain() reads this)
KEEPS_INPLACE = True


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = None, use_captum: bool = False, **_) -> Attribution:
    if use_captum:
        return gradcam_captum(model, x, target)
    feats, logits = target_forward(model, x, detach=True)
    with torch.enable_grad():
        t = resolve_target(target, logits)
        score = logits.gather(1, t[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = (weights * feats.detach()).sum(1).clamp_min(0)
    return Attribution(cam, logits.detach())


def gradcam_captum(model: nn.Module, x: torch.Tensor, target: Target = None, layer: nn.Module | None = None) -> Attribution:
    """Captum's LayerGradCam at `layer` (default the target module; convolutional layouts only); ReLU applied."""
    from captum.attr import LayerGradCam

    from core.models.target import target_spec

    if layer is None and target_spec(model).layout != "nchw":
        raise ValueError("Captum's LayerGradCam needs a convolutional target layer; this network's is a "
                         f"{target_spec(model).layout} layer (use gradcam without use_captum)")
    layer = layer if layer is not None else target_module(model)
    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    with torch.enable_grad():
        attr = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    return Attribution(attr[:, 0].detach(), logits)
