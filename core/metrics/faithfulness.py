"""Faithfulness of explanation maps by perturbation (docs/architecture.md, Definitions): POS, NEG, DEL, INS.

For every image and every fraction p ∈ {0, .1, …, .9} the top (POS, DEL) or the bottom (NEG, INS) p of the
pixels, ranked by the map, are blanked to the image's background value and the frozen model is run again:

- POS / NEG read top-1 accuracy (argmax == label; the label defaults to the explained class),
- DEL / INS read the softmax probability of the explained (target) class,
- score = AUC × 100 over x ∈ {0, .1, …, .9} (trapezoid, so the maximum is 90).

Lower is better for POS and DEL (removing what the map calls relevant should hurt at once); higher is better for
NEG and INS (removing what the map calls irrelevant should not). POS and DEL read the same perturbed images, so
do NEG and INS: one batched forward of N × 2 × len(fractions) images (chunked only to bound memory) gives all
four curves. Ties in a map are broken by a seeded random order, never by pixel position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.registries import METRICS as _SPECS

FRACTIONS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(10))
METRICS = tuple(_SPECS.names(kind="faithfulness"))  # names, labels, directions and help: core.registries
NAMES = _SPECS.labels(kind="faithfulness")
HIGHER_IS_BETTER = {m.name: m.higher_is_better for m in _SPECS.specs(kind="faithfulness")}
HELP = {m.name: m.help for m in _SPECS.specs(kind="faithfulness")}


@dataclass
class Curves:
    """Per-image perturbation curves, each (N, len(fractions)), and the fractions they were read at."""

    fractions: torch.Tensor
    top_correct: torch.Tensor      # POS: top p removed, argmax == label
    bottom_correct: torch.Tensor   # NEG: bottom p removed, argmax == label
    top_prob: torch.Tensor         # DEL: top p removed, p(target)
    bottom_prob: torch.Tensor      # INS: bottom p removed, p(target)

    def curve(self, metric: str) -> torch.Tensor:
        return {"pos": self.top_correct, "neg": self.bottom_correct, "del": self.top_prob,
                "ins": self.bottom_prob}[metric]


def background_value(x: torch.Tensor) -> torch.Tensor:
    """(N, C, 1, 1): per image and channel, the median of the outer one-pixel frame (the film around the body)."""
    frame = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    return frame.median(dim=-1).values[..., None, None]


def pixel_ranks(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, H·W) rank of every pixel by the map, 0 = most relevant; ties broken by a seeded random order."""
    e = maps.flatten(1).float()
    n, hw = e.shape
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(hw, generator=g).to(e.device)
    order = perm[e[:, perm].argsort(dim=1, descending=True, stable=True)]   # pixel indices, most relevant first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(hw, device=e.device).expand(n, hw).contiguous())
    return ranks


def blank_masks(ranks: torch.Tensor, fractions=FRACTIONS, top: bool = True) -> torch.Tensor:
    """(N, F, H·W) bool, True where a pixel is blanked: the round(p·H·W) highest (top) or lowest ranked pixels."""
    hw = ranks.shape[1]
    k = torch.tensor([int(round(float(p) * hw)) for p in fractions], device=ranks.device)
    r = ranks[:, None, :]
    return r < k[None, :, None] if top else r >= (hw - k)[None, :, None]


def perturbed_images(x: torch.Tensor, maps: torch.Tensor, fractions=FRACTIONS, top: bool = True,
                     background: float | torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """(N, F, C, H, W): x with the top / bottom p of its pixels (by the map) set to the background value."""
    n, c, h, w = x.shape
    e = _maps_like(maps, x)
    bg = _background(x, background)
    blank = blank_masks(pixel_ranks(e, seed), fractions, top).view(n, len(fractions), 1, h, w)
    return torch.where(blank, bg[:, None], x[:, None])


@torch.no_grad()
def perturbation_curves(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor | int,
                        labels: torch.Tensor | None = None, fractions=FRACTIONS,
                        background: float | torch.Tensor | None = None, batch_size: int = 512,
                        seed: int = 0) -> Curves:
    """Curves for images x (N, C, H, W) in [0, 1] and maps (N, h, w) (resized bilinearly to H×W if needed).

    target: the class each map explains (N,) or one int; its probability is read for DEL / INS.
    labels: the class that counts as correct for POS / NEG (default: target).
    background: None → background_value(x); a float or a (N, C, 1, 1) tensor otherwise.
    batch_size: perturbed images per forward (memory bound only; results do not depend on it).
    """
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    dev = x.device
    tgt = _per_image(target, n, dev)
    lab = tgt if labels is None else _per_image(labels, n, dev)
    e = _maps_like(maps, x)
    bg = _background(x, background)
    ranks = pixel_ranks(e, seed)
    nf = len(fractions)
    was_training = model.training
    model.eval()
    try:
        # per image: 2·F variants; chunk whole images so one forward holds at most ~batch_size variants
        per = max(1, int(batch_size) // (2 * nf))
        probs, preds = [], []
        for s in range(0, n, per):
            sl = slice(s, s + per)
            m = torch.cat([blank_masks(ranks[sl], fractions, True), blank_masks(ranks[sl], fractions, False)], 1)
            m = m.view(-1, 2 * nf, 1, h, w)
            xp = torch.where(m, bg[sl, None], x[sl, None]).reshape(-1, c, h, w)
            p = model(xp).float().softmax(-1)
            p = p.view(-1, 2 * nf, p.shape[-1])
            probs.append(p.gather(2, tgt[sl, None, None].expand(-1, 2 * nf, 1))[..., 0])
            preds.append(p.argmax(2))
        prob, pred = torch.cat(probs), torch.cat(preds)
    finally:
        model.train(was_training)
    correct = (pred == lab[:, None]).float()
    fr = torch.tensor([float(p) for p in fractions], device=dev)
    return Curves(fr, correct[:, :nf], correct[:, nf:], prob[:, :nf], prob[:, nf:])


def auc100(curve: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under (N, F) curves over the fractions, × 100."""
    return torch.trapezoid(curve, fractions, dim=-1) * 100.0


def scores(curves: Curves) -> dict[str, torch.Tensor]:
    """{pos, neg, del, ins}: per-image AUC × 100, each (N,)."""
    return {k: auc100(curves.curve(k), curves.fractions) for k in METRICS}


def faithfulness(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor | int,
                 labels: torch.Tensor | None = None, fractions=FRACTIONS,
                 background: float | torch.Tensor | None = None, batch_size: int = 512,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-image POS, NEG, DEL, INS (N,) plus the per-image curves under curve_<metric> (N, F)."""
    cv = perturbation_curves(model, x, maps, target, labels, fractions, background, batch_size, seed)
    out = scores(cv)
    out.update({f"curve_{k}": cv.curve(k) for k in METRICS})
    out["fractions"] = cv.fractions
    return out


def _per_image(t, n: int, dev) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.long, device=dev).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{t.numel()} classes for {n} images")
    return t


def _maps_like(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    e = maps.float().to(x.device)
    if e.dim() == 4:
        e = e[:, 0]
    if e.dim() == 2:
        e = e[None]
    if e.shape[0] != x.shape[0]:
        raise ValueError(f"{e.shape[0]} maps for {x.shape[0]} images")
    if tuple(e.shape[-2:]) != tuple(x.shape[-2:]):
        e = F.interpolate(e[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return e


def _background(x: torch.Tensor, background) -> torch.Tensor:
    if background is None:
        return background_value(x)
    b = torch.as_tensor(background, dtype=x.dtype, device=x.device)
    if b.dim() == 0:
        return b.expand(x.shape[0], x.shape[1], 1, 1)
    return b.reshape(x.shape[0], -1, 1, 1).expand(x.shape[0], x.shape[1], 1, 1)
