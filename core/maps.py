"""Explanation maps on the CPU without torch: bilinear resizing (torch's align_corners=False formula, exactly) and
the per-map max normalisation of docs/architecture.md, Definitions, for maps stored at the model's map resolution and
shown at the image's size (pages and reports import this; it never imports torch)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bilinear weights, as F.interpolate(mode='bilinear', align_corners=False) uses them."""
    w = np.zeros((n_out, n_in), np.float32)
    scale = n_in / n_out
    for i in range(n_out):
        src = max(scale * (i + 0.5) - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        i1 = i0 + 1 if i0 < n_in - 1 else i0
        lam = src - i0 if i1 != i0 else 0.0
        w[i, i0] += 1.0 - lam
        w[i, i1] += lam
    return w


def resize_bilinear(maps: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """(h, w) or (k, h, w) float → the same at `size` (H, W), float32."""
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    m = np.asarray(maps, np.float32)
    if m.shape[-2:] == size:
        return m.copy()
    wy, wx = _weights(m.shape[-2], size[0]), _weights(m.shape[-1], size[1])
    return np.einsum("Hh,...hw,Ww->...HW", wy, m, wx, optimize=True).astype(np.float32)


def upsample_normalise(maps: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Non-negative maps → bilinear to `size` → each divided by its own max (0 where the max is 0; NaN stays NaN)."""
    e = np.clip(resize_bilinear(np.nan_to_num(maps, nan=0.0), size), 0.0, None)
    peak = e.max(axis=(-2, -1), keepdims=True)
    out = np.divide(e, peak, out=np.zeros_like(e), where=peak > 0)
    nan = np.isnan(np.asarray(maps, np.float32)).all(axis=(-2, -1))
    if np.any(nan):
        out[nan] = np.nan
    return out
