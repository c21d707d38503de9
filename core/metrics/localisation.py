"""Localisation metrics of explanation maps against ground-truth masks (docs/architecture.md, Definitions), vectorised
in torch.

Every function takes maps E (N, H, W) normalised to max 1 (or (H, W)), masks of the same shape (bool or {0,1})
and returns a float32 tensor (N,) on the maps' device. Undefined cases give NaN, never a silent 0 or 1:
an empty mask (no ground truth for that image) and an all-zero map make every metric NaN; WR is NaN where there
is no confounder mask.

- ar: |T(E) ∩ M| / |M|, T(E) = E ≥ τ          - ap: |T(E) ∩ M| / |T(E)|
- f1: 2·AR·AP / (AR + AP) (0 when both are 0)  - soft_ar: Σ(E·M) / ΣM
- relevance_mass: Σ(E·M) / ΣE                   - rra: share of M inside the top-|M| pixels of E
- pointing: 1 if argmax(E) ∈ M else 0           - wr: |T(E) ∩ C| / |C| for the confounder mask C
Ties in E (ReLU plateaus, a flat top) are broken by a seeded random order of the pixels (TIE_SEED, the same
order core.metrics.faithfulness uses), never by pixel position (docs/architecture.md, Definitions): a plateau over the
mask's corner and one over its centre score alike whatever their place in raster order.
"""
from __future__ import annotations

import torch

from core.registries import METRICS as _SPECS  # names and labels, written once

METRICS = tuple(_SPECS.names(kind="localisation"))
NAMES = _SPECS.labels(kind="localisation")


def _prep(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = maps.float()
    if e.dim() == 2:
        e = e[None]
    m = torch.as_tensor(mask, device=e.device)
    if m.dim() == 2:
        m = m[None]
    m = m.bool()
    if m.shape != e.shape:
        raise ValueError(f"maps {tuple(e.shape)} and masks {tuple(m.shape)} differ in shape")
    return e.flatten(1), m.flatten(1)


TIE_SEED = 0


def _tie_perm(p: int, device, seed: int = TIE_SEED) -> torch.Tensor:
    """A fixed random permutation of the p pixels (the tie-breaking order)."""
    return torch.randperm(p, generator=torch.Generator().manual_seed(int(seed))).to(device)


def _rank_order(e: torch.Tensor, seed: int = TIE_SEED) -> torch.Tensor:
    """(N, P) pixel indices by E descending, equal values in the seeded random order."""
    perm = _tie_perm(e.shape[1], e.device, seed)
    return perm[e[:, perm].argsort(dim=1, descending=True, stable=True)]


def _argmax(e: torch.Tensor, seed: int = TIE_SEED) -> torch.Tensor:
    """(N, 1) index of the maximum of each row; among equal maxima the first in the seeded random order."""
    perm = _tie_perm(e.shape[1], e.device, seed)
    return perm[e[:, perm].argmax(1)][:, None]


def _nan_where(v: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    return torch.where(undefined, torch.full_like(v, float("nan")), v)


def _undefined(e: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (m.sum(1) == 0) | (e.amax(1) <= 0)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den.clamp_min(torch.finfo(num.dtype).tiny)


def ar(maps, mask, tau: float = 0.5) -> torch.Tensor:
    e, m = _prep(maps, mask)
    t = e >= tau
    return _nan_where(_ratio((t & m).sum(1).float(), m.sum(1).float()), _undefined(e, m))


def ap(maps, mask, tau: float = 0.5) -> torch.Tensor:
    e, m = _prep(maps, mask)
    t = e >= tau
    nt = t.sum(1)
    return _nan_where(_ratio((t & m).sum(1).float(), nt.float()), _undefined(e, m) | (nt == 0))


def f1(maps, mask, tau: float = 0.5) -> torch.Tensor:
    r, p = ar(maps, mask, tau), ap(maps, mask, tau)
    s = r + p
    return torch.where(s > 0, 2 * r * p / s.clamp_min(1e-12), torch.where(torch.isnan(s), s, torch.zeros_like(s)))


def soft_ar(maps, mask) -> torch.Tensor:
    e, m = _prep(maps, mask)
    return _nan_where(_ratio((e * m).sum(1), m.sum(1).float()), _undefined(e, m))


def relevance_mass(maps, mask) -> torch.Tensor:
    e, m = _prep(maps, mask)
    return _nan_where(_ratio((e * m).sum(1), e.sum(1)), _undefined(e, m))


def rra(maps, mask) -> torch.Tensor:
    """|top-k(E) ∩ M| / k with k = |M| (ties in E broken in a seeded random order)."""
    e, m = _prep(maps, mask)
    k = m.sum(1)
    order = _rank_order(e)
    hits = m.gather(1, order).float().cumsum(1)
    at_k = hits.gather(1, (k - 1).clamp_min(0)[:, None])[:, 0]
    return _nan_where(_ratio(at_k, k.float()), _undefined(e, m))


def pointing(maps, mask) -> torch.Tensor:
    e, m = _prep(maps, mask)
    hit = m.gather(1, _argmax(e))[:, 0].float()
    return _nan_where(hit, _undefined(e, m))


def wr(maps, confounder, tau: float = 0.5) -> torch.Tensor:
    """Share of the confounder mask covered by T(E); NaN where there is no confounder mask (or the map is zero)."""
    return ar(maps, confounder, tau)


def localisation_metrics(maps: torch.Tensor, mask: torch.Tensor, confounder: torch.Tensor | None = None,
                         tau: float = 0.5, ranked: bool = True) -> dict[str, torch.Tensor]:
    """All of METRICS for a batch in one pass on the maps' device; wr is all-NaN when confounder is None.
    ranked=False leaves out the two that rank every pixel (rra, pointing: NaN), half the cost at 256 px, for
    callers that read only AR / AP / WR (the retrain evidence)."""
    e, m = _prep(maps, mask)
    n = e.shape[0]
    nan = torch.full((n,), float("nan"), device=e.device)
    und = _undefined(e, m)
    t = e >= tau
    nm, nt = m.sum(1).float(), t.sum(1)
    inter = (t & m).sum(1).float()
    r = _nan_where(_ratio(inter, nm), und)
    p = _nan_where(_ratio(inter, nt.float()), und | (nt == 0))
    s = r + p
    f = torch.where(s > 0, 2 * r * p / s.clamp_min(1e-12), torch.where(torch.isnan(s), s, torch.zeros_like(s)))
    em = (e * m).sum(1)
    out = {"ar": r, "ap": p, "f1": f, "soft_ar": _nan_where(_ratio(em, nm), und),
           "relevance_mass": _nan_where(_ratio(em, e.sum(1)), und)}
    if ranked:
        order = _rank_order(e)
        k = m.sum(1)
        hits = m.gather(1, order).float().cumsum(1).gather(1, (k - 1).clamp_min(0)[:, None])[:, 0]
        out["rra"] = _nan_where(_ratio(hits, k.float()), und)
        out["pointing"] = _nan_where(m.gather(1, _argmax(e))[:, 0].float(), und)
    else:
        out["rra"] = out["pointing"] = nan
    if confounder is None:
        out["wr"] = nan
    else:
        _, c = _prep(maps, confounder)
        out["wr"] = _nan_where(_ratio((t & c).sum(1).float(), c.sum(1).float()), (c.sum(1) == 0) | (e.amax(1) <= 0))
    return out
