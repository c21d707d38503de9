"""Occlusion (Captum): drop in the class score when a black window covers each pixel (positive part)."""
from __future__ import annotations

import torch

from core.explain import Attribution, Target, channel_sum, predict_logits, resolve_target


def occlusion(model, x: torch.Tensor, target: Target = None, window: int | None = None, stride: int | None = None,
              perturbations_per_eval: int = 64, **_) -> Attribution:
    from captum.attr import Occlusion

    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    c, h = x.shape[1], x.shape[-1]
    window = window or max(2, h // 8)
    stride = stride or max(1, window // 2)
    with torch.no_grad():
        attr = Occlusion(model).attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                          target=t, baselines=0.0, perturbations_per_eval=perturbations_per_eval)
    return Attribution(channel_sum(attr.detach(), mode="relu"), logits)
