"""Integrated Gradients (Captum) from a black baseline: |attribution| summed over channels."""
from __future__ import annotations

import torch

from core.explain import Attribution, Target, channel_sum, predict_logits, resolve_target


def integrated_gradients(model, x: torch.Tensor, target: Target = None, n_steps: int = 32,
                         internal_batch_size: int | None = 256, **_) -> Attribution:
    from captum.attr import IntegratedGradients

    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    with torch.enable_grad():
        attr = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=n_steps,
                                                    internal_batch_size=internal_batch_size)
    return Attribution(channel_sum(attr.detach()), logits)
