"""Explanation methods behind one call shape: explain(model, x, target, method, **kw) → maps (N, H, W) in [0, 1].

Registry: the specs of core.registries.EXPLANATION_METHODS (docs/architecture.md, Registries); EXPLAINERS maps the name
of each method with a function of its own to that 'module:function' (the LTX variants run `ltx` with their own keyword
arguments, services.explanations.ltx). A new method is one module whose function has the shape
`fn(model, x, target, **kw) -> Attribution(raw, logits)` and one spec there. `raw` is a non-negative
(N, h, w) relevance at the method's own resolution; explain() upsamples it bilinearly to `size` (default: the
input size) and divides each map by its own max (0 where the max is 0), as docs/architecture.md, Definitions defines E.

While a method runs the model is in eval mode, its parameters do not require grad (gradients are taken with
respect to activations or inputs only) and in-place ReLUs are switched off unless the method's module says
KEEPS_INPLACE = True; all of it is restored afterwards.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.registries import EXPLANATION_METHODS
from core.registry import load

# ltx needs explainer=<trained LTXExplainer> (services.explanations.ltx.method_kwargs)
EXPLAINERS: dict[str, str] = {s.name: s.entry for s in EXPLANATION_METHODS if s.variant_of is None}

Target = int | str | None | Sequence[int] | torch.Tensor


class Attribution(NamedTuple):
    raw: torch.Tensor      # (N, h, w) non-negative relevance at the method's resolution
    logits: torch.Tensor   # (N, K) logits of the same inputs


def list_methods() -> list[str]:
    return list(EXPLAINERS)


def get_explainer(method: str):
    if method not in EXPLAINERS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(EXPLAINERS)}")
    return load(EXPLAINERS[method])


def keeps_inplace(method: str, **kw) -> bool:
    """Whether `method` may run with the network's in-place ReLUs left in place (its module's KEEPS_INPLACE)."""
    if method not in EXPLAINERS or kw.get("use_captum"):
        return False
    return bool(getattr(importlib.import_module(EXPLAINERS[method].split(":")[0]), "KEEPS_INPLACE", False))


def not_applicable(method: str, model: nn.Module) -> str | None:
    """Why `method` does not apply to this network, or None: a method module may define applies(model) → reason."""
    mod = importlib.import_module(EXPLAINERS[method].split(":")[0]) if method in EXPLAINERS else None
    check = getattr(mod, "applies", None)
    return check(model) if check else None


def resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """None / 'predicted' → argmax of the logits; an int → that class for every image; else one class per image."""
    n = logits.shape[0]
    if target is None or (isinstance(target, str) and target == "predicted"):
        return logits.argmax(1)
    if isinstance(target, str):
        raise ValueError(f"target must be 'predicted', a class index or one index per image, not {target!r}")
    if isinstance(target, int):
        return torch.full((n,), int(target), dtype=torch.long, device=logits.device)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{t.numel()} targets for {n} images")
    return t


@contextmanager
def explaining(model: nn.Module, keep_inplace: bool = False) -> Iterator[nn.Module]:
    """Eval mode, parameters frozen and in-place ReLUs off for the duration (kept with keep_inplace, for methods
    that read only a target layer's copy: an out-of-place ReLU costs DenseNet 20 % of its forward); the previous
    state is restored."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    relus = [] if keep_inplace else [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6)) and m.inplace]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    for m in relus:
        m.inplace = False
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m in relus:
            m.inplace = True
        model.train(was_training)


def upsample_normalise(raw: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, h, w) non-negative → bilinear to `size` → each map divided by its own max (0 where the max is 0)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    e = raw.float().clamp_min(0)
    if tuple(e.shape[-2:]) != size:
        e = F.interpolate(e[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    m = e.amax(dim=(1, 2), keepdim=True)
    return torch.where(m > 0, e / m.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))


def explain(model: nn.Module, x: torch.Tensor, target: Target = None, method: str = "gradcam",
            size: int | tuple[int, int] | None = None, return_logits: bool = False, **kw):
    """Maps E (N, H, W) in [0, 1] for images x (N, C, H, W) in [0, 1] and the target class(es).

    target: None / 'predicted' (argmax, from the same forward pass), an int, or one class per image.
    size: the map size (default: the input's H, W). With return_logits, returns (maps, logits).
    """
    fn = get_explainer(method)
    size = size if size is not None else tuple(x.shape[-2:])
    with explaining(model, keep_inplace=keeps_inplace(method, **kw)):
        att = fn(model, x, target, **kw)
    maps = upsample_normalise(att.raw.detach(), size)
    return (maps, att.logits.detach()) if return_logits else maps


def channel_sum(attr: torch.Tensor, mode: str = "abs") -> torch.Tensor:
    """(N, C, H, W) input attribution → (N, H, W) non-negative: |a| summed over channels ('abs') or ReLU of the sum."""
    if mode == "abs":
        return attr.abs().sum(1)
    return attr.sum(1).clamp_min(0)


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)
