"""LTX as an explanation method: the trained explainer's mask, finetuned per instance
(docs/architecture.md, Definitions).

explain(model, x, target, method="ltx", explainer=E, finetune_steps=25): E is a pretrained LTXExplainer (or the
path of its safetensors checkpoint); finetune_steps=0 gives the pretrained explainer's mask alone. The target
class is the class the finetuning keeps (default: the prediction, as in the LTX loss). The explainer is not
changed. Each image's mask is the one at its lowest-training-loss step (core.ltx.train.finetune), with the α and
masking the explainer was pretrained with unless given.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from core.explain import Attribution, Target, predict_logits, resolve_target


def ltx(model: nn.Module, x: torch.Tensor, target: Target = None, explainer: nn.Module | str | Path | None = None,
        finetune_steps: int | None = None, alpha: float | None = None, lr: float | None = None,
        masking: str | None = None, **_) -> Attribution:
    from core.ltx import ALPHA, load_explainer
    from core.ltx.loss import MASKING
    from core.ltx.train import FINETUNE_LR, FINETUNE_STEPS, finetune

    if explainer is None:
        raise ValueError("the ltx method needs a trained explainer: explain(..., method='ltx', explainer=...) "
                         "(train one with `exemplar ltx train --model ID`)")
    if isinstance(explainer, (str, Path)):
        explainer = load_explainer(explainer, device=x.device)
    explainer = explainer.to(x.device)
    alpha = float(alpha if alpha is not None else getattr(explainer, "alpha", ALPHA))
    masking = masking or getattr(explainer, "masking", MASKING)  # the objective it was pretrained with
    steps = FINETUNE_STEPS if finetune_steps is None else int(finetune_steps)
    logits = predict_logits(model, x)
    t = resolve_target(target, logits)
    if steps == 0:
        with torch.no_grad():
            masks = explainer.eval()(x)
    else:
        masks = finetune(explainer, model, x, t, steps=steps, lr=lr or FINETUNE_LR, alpha=alpha,
                         masking=masking).masks
    return Attribution(masks[:, 0].detach(), logits)
