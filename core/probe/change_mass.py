"""Counterfactual change mass: the share of Σ|Δ| inside a region divided by the region's area share.

1 means the change is spread as if the region did not matter; > 1 means it concentrates there (e.g. the
confounder box for a model that reads the shortcut); NaN when the region is empty or nothing changed.
"""
from __future__ import annotations

import numpy as np


def change_mass_ratio(original: np.ndarray, generated: np.ndarray, region: np.ndarray | None) -> float:
    """(Σ|Δ|·region / Σ|Δ|) / (Σregion / area) for one image pair, or NaN when undefined."""
    if region is None:
        return float("nan")
    d = np.abs(generated.astype(float) - original.astype(float))
    m = np.asarray(region, dtype=float)
    tot, area = d.sum(), m.sum()
    if tot <= 0 or area <= 0:
        return float("nan")
    return float(((d * m).sum() / tot) / (area / m.size))


def mean_ratio(pairs) -> float:
    """Mean ratio over (original, generated, region) triples, ignoring undefined ones (NaN if none is defined)."""
    r = np.array([change_mass_ratio(o, g, m) for o, g, m in pairs], dtype=float)
    r = r[np.isfinite(r)]
    return float(r.mean()) if r.size else float("nan")
