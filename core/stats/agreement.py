"""Agreement between readers on a units × readers matrix of category codes (0..k-1, NaN = no answer).

Kept libraries do the arithmetic: `krippendorff` (α, nominal / ordinal, missing answers allowed), statsmodels
(Fleiss' κ, complete units only), scikit-learn (Cohen's κ, quadratic weights for ordinal scales), scipy (Spearman ρ).
"""
from __future__ import annotations

import numpy as np


def krippendorff_alpha(data: np.ndarray, k: int, ordinal: bool = False) -> float:
    """Krippendorff's α over units × readers codes; units with fewer than two answers do not count."""
    import krippendorff

    data = np.asarray(data, dtype=float)
    pairable = (np.isfinite(data).sum(axis=1) >= 2)
    d = data[pairable]
    if d.shape[0] == 0 or len(np.unique(d[np.isfinite(d)])) < 2:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=d.T, level_of_measurement="ordinal" if ordinal else "nominal",
                                    value_domain=list(range(k))))


def fleiss_kappa(data: np.ndarray, k: int) -> float:
    """Fleiss' κ (1971) over the units every reader answered."""
    from statsmodels.stats.inter_rater import fleiss_kappa as _fk

    data = np.asarray(data, dtype=float)
    full = data[np.isfinite(data).all(axis=1)].astype(int)
    if full.shape[0] == 0 or full.shape[1] < 2:
        return float("nan")
    table = np.stack([(full == c).sum(axis=1) for c in range(k)], axis=1)
    if (table.sum(axis=0) > 0).sum() < 2:
        return float("nan")
    return float(_fk(table, method="fleiss"))


def cohen_kappa(a: np.ndarray, b: np.ndarray, k: int, ordinal: bool = False) -> float:
    """Cohen's κ of two readers on the units both answered (quadratic weights when the scale is ordinal)."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a, float), np.asarray(b, float)
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 2:
        return float("nan")
    x, y = a[both].astype(int), b[both].astype(int)
    if len(np.unique(np.concatenate([x, y]))) < 2:
        return float("nan")
    return float(cohen_kappa_score(x, y, labels=list(range(k)), weights="quadratic" if ordinal else None))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ on the pairs where both values are finite."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def disagreement(data: np.ndarray, ordinal: bool = False) -> np.ndarray:
    """Per unit: ordinal → standard deviation of the codes; nominal → 1 − share of the most common answer.
    NaN for units with fewer than two answers."""
    data = np.asarray(data, dtype=float)
    out = np.full(data.shape[0], np.nan)
    for i, row in enumerate(data):
        v = row[np.isfinite(row)]
        if len(v) < 2:
            continue
        out[i] = float(np.std(v)) if ordinal else 1.0 - np.bincount(v.astype(int)).max() / len(v)
    return out
