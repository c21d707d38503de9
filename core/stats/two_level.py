"""One interval for every cell and effect of a retrain: a two-level bootstrap over seeds, then held-out images.

A model group is an array (S, N): S seeds (1 for the parent), N held-out images, NaN where a measure is undefined.
One replicate draws N images with replacement (the same draw for every group of one split: `seed` fixes it), takes
each seed's mean over the drawn images, then draws S seeds with replacement (the same seed indices for the groups
being compared: seed s of the child was trained with seed s of each control) and averages them. The statistic is
the mean (or the paired difference of means) over seeds. The seed level is widened by sqrt(S / (S − 1)), the
usual small-sample correction of the bootstrap variance of a mean (it is (S − 1) / S of the plug-in value).
With S = 1 it is a percentile bootstrap over images: the interval then covers the image sample only.
A simulation test (tests/test_two_level_bootstrap.py) checks coverage of a known effect.
"""
from __future__ import annotations

import math

import numpy as np

N_BOOT = 1000
CHUNK = 200  # replicates per block: a (CHUNK, N) count matrix at a time, whatever the split's size


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _as2d(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a[None] if a.ndim == 1 else a


def _seed_means(a: np.ndarray) -> np.ndarray:
    """(S,) mean of each seed over its defined images (NaN where none is defined)."""
    f = np.isfinite(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(f.any(1), np.where(f, a, 0).sum(1) / np.maximum(f.sum(1), 1), np.nan)


def _boot_means(a: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, S): each seed's mean over the images a replicate drew (counts (B, N) of each image)."""
    f = np.isfinite(a)
    v = np.where(f, a, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ v.T) / (counts @ f.T.astype(np.float64))


def _seed_level(m: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B,) corrected seed resample of per-replicate seed values m (B, S) with seed draws idx (B, S)."""
    s = m.shape[1]
    if s == 1:
        return m[:, 0]
    centre = np.nanmean(m, axis=1)
    drawn = np.nanmean(np.take_along_axis(m, idx, axis=1), axis=1)
    return centre + math.sqrt(s / (s - 1)) * (drawn - centre)


def interval(a, b=None, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95,
             bounds: tuple[float, float] | None = None) -> dict:
    """{mean, low, high, n, seeds, agree}: mean(a) − mean(b) (or mean(a)) over seeds and images, with its two-level
    bootstrap interval. a, b: (S, N) or (N,); a group with one seed is compared with every seed of the other.
    agree: True when a and b are equal on every image and seed (a zero-width interval that means exactly that).
    bounds: the statistic's range (a share: (0, 1); a difference of shares: (−1, 1)); the widened seed level can
    reach past it, so the ends are clipped to it."""
    a = _as2d(a)
    b = None if b is None else _as2d(b)
    n = a.shape[1]
    if b is not None and b.shape[1] != n:
        raise ValueError(f"the groups hold different images ({n} vs {b.shape[1]})")
    s = max(a.shape[0], b.shape[0] if b is not None else 1)
    point = _seed_means(a) - (0.0 if b is None else _seed_means(b))
    mean = _num(np.nanmean(point)) if np.isfinite(point).any() else None
    agree = bool(b is not None and a.shape == b.shape and np.array_equal(a, b, equal_nan=True))
    out = {"mean": mean, "low": None, "high": None, "n": int(n), "seeds": int(s), "agree": agree}
    if mean is None or n < 2:
        return out
    img_rng, seed_rng = (np.random.default_rng(q) for q in np.random.SeedSequence(seed).spawn(2))
    stats = []
    for c in range(0, n_boot, CHUNK):
        k = min(CHUNK, n_boot - c)
        counts = img_rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(np.float64)
        idx = seed_rng.integers(0, s, size=(k, s))
        m = _boot_means(a, counts)
        if b is not None:
            m = m - _boot_means(b, counts)  # (k, 1) broadcasts over the other group's seeds
        stats.append(_seed_level(np.broadcast_to(m, (k, s)), idx))
    v = np.concatenate(stats)
    v = v[np.isfinite(v)]
    if v.size < max(10, n_boot // 10):
        return out
    a_ = (1 - level) / 2
    lo, hi = np.quantile(v, [a_, 1 - a_])
    if bounds is not None:
        lo, hi = np.clip([lo, hi], *bounds)
    out.update(low=_num(lo), high=_num(hi))
    return out
