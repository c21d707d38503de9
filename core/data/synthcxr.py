"""SynthCXR: seeded, vectorised chest-radiograph-like images with lung / lesion / marker masks
(docs/architecture.md, SynthCXR).

Anatomy (thorax, two lung fields, heart and mediastinum, spine, clavicles, ribs), film blur and noise are drawn
for a batch of images at once with numpy. Four classes carry lung-zone lesions that are learnable from the lungs
alone; a laterality-marker glyph ('L' or 'R', varying size, brightness and rotation) sits in a corner that depends
on the class with probability p in train / val / test and is uniformly random in `test_shifted` (the confounder).

`generate()` returns arrays; `write_tree()` streams the COVID-19 Radiography layout plus `lesion_masks/`,
`marker_masks/`, `splits.csv`, `attributes.csv` and `synthcxr.json`. Same arguments → byte-identical files.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

VERSION = 1
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
SPLITS = ("train", "val", "test", "test_shifted")
SPLIT_FRACTIONS = (0.60, 0.10, 0.15, 0.15)
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
CLASS_CORNER = {0: 0, 1: 1, 2: 2, 3: 3}  # class index → corner index of its marker (with probability p)
LESION_TYPE = {0: "ground_glass", 1: "consolidation", 2: "none", 3: "interstitial"}
MARKER_BOX = 0.2  # the marker lies inside the corner squares of this side (fraction of the image)
MIN_SIZE, MAX_SIZE = 32, 512
LESION_GAIN = 0.6  # lesion contrast: clearly visible, yet slower to learn than the marker (bench/synthcxr_shortcut.py)
ATTRIBUTE_FIELDS = ("path", "class", "label", "split", "marker_corner", "marker_in_class_corner", "marker_letter",
                    "marker_size", "marker_brightness", "marker_angle", "lesion_type", "lesion_left", "lesion_right",
                    "lesion_area", "severity")

# Glyph strokes as segments in a unit box (x right, y down); 'L' is padded with repeats to R's count.
_R = [((0.22, 0.08), (0.22, 0.92)), ((0.22, 0.08), (0.62, 0.08)), ((0.62, 0.08), (0.80, 0.22)),
      ((0.80, 0.22), (0.80, 0.36)), ((0.80, 0.36), (0.62, 0.50)), ((0.62, 0.50), (0.22, 0.50)),
      ((0.45, 0.50), (0.82, 0.92))]
_L = [((0.25, 0.08), (0.25, 0.92)), ((0.25, 0.92), (0.80, 0.92))]
_L = _L + [_L[i % 2] for i in range(len(_R) - len(_L))]
GLYPHS = np.array([_L, _R], dtype=np.float32)  # (2 letters, 7 segments, 2 points, xy)
LETTERS = ("L", "R")


@dataclass
class SynthCXR:
    """A generated dataset in memory: uint8 images (N,H,W), uint8 {0,1} masks, labels, splits, attributes."""

    images: np.ndarray
    lung: np.ndarray
    lesion: np.ndarray
    marker: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    attributes: list[dict]
    classes: tuple = CLASSES

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ----------------------------------------------------------------------------------------------- parameters

def check_args(n: int, size: int, confounder: float) -> None:
    """A one-line ValueError for a size, count or confounder rate SynthCXR cannot make (also before a demo job)."""
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, got {size}")
    if int(n) < len(CLASSES) * len(SPLITS):
        raise ValueError(f"n must be at least {len(CLASSES) * len(SPLITS)} (every class in every split), got {n}")
    if not 0.0 <= float(confounder) <= 1.0:
        raise ValueError(f"confounder must be a probability in [0, 1], got {confounder}")


def assign_splits(labels: np.ndarray, rng: np.random.Generator, fractions=SPLIT_FRACTIONS) -> np.ndarray:
    """Stratified split names: per class, a shuffled order cut at the cumulative fractions (every split ≥ 1)."""
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        cuts = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        cuts[-1] = len(idx)
        start = 0
        for k, (name, end) in enumerate(zip(SPLITS, cuts)):
            end = max(end, start + 1) if len(idx) - start > len(SPLITS) - 1 - k else end
            out[idx[start:end]] = name
            start = end
    return out.astype(str)


def _params(n: int, confounder: float, seed: int) -> dict[str, np.ndarray]:
    """Every per-image random choice, drawn once for the whole set in a fixed order (chunking never changes it)."""
    rng = np.random.default_rng([seed, 0xC0FFEE, VERSION])
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, size=(n, *shape)).astype(np.float32)  # noqa: E731
    labels = np.arange(n) % len(CLASSES)
    labels = labels[rng.permutation(n)].astype(np.int64)
    splits = assign_splits(labels, rng)
    # Marker corner: the class corner with probability p (else one of the other three), uniform in test_shifted.
    own = np.array([CLASS_CORNER[int(c)] for c in labels])
    other = (own + rng.integers(1, 4, size=n)) % 4
    corner = np.where(rng.random(n) < confounder, own, other)
    shifted = splits == "test_shifted"
    corner = np.where(shifted, rng.integers(0, 4, size=n), corner)
    p = dict(labels=labels, splits=splits, corner=corner.astype(np.int64))
    # Patient pose and anatomy.
    p.update(shift=u(-0.025, 0.025, 2), scale=u(0.93, 1.04), rot=u(-0.07, 0.07), body_w=u(0.92, 1.06),
             lung_w=u(0.85, 1.02), lung_h=u(0.9, 1.04), heart=u(0.85, 1.2), heart_dx=u(-0.02, 0.03),
             rib_gap=u(0.068, 0.085), rib_phase=u(0.0, 1.0), rib_amp=u(0.05, 0.09),
             body_level=u(0.44, 0.54), lung_level=u(0.15, 0.24), bone_level=u(0.56, 0.66),
             grad=u(-0.05, 0.05, 2), gamma=u(0.85, 1.18), blur=u(0.45, 0.8), noise=u(0.012, 0.03))
    # Lesions: up to 6 blobs (COVID: 2-3 per lung, lower zone, peripheral; Lung_Opacity: one dense focus).
    sev = u(0.6, 1.25)
    blob_t = u(0.55, 0.95, 6)        # height within the lung (0 apex, 1 base)
    blob_r = u(0.25, 0.8, 6)         # lateral offset as a fraction of the lung half-width (+ = lateral)
    blob_s = u(0.035, 0.055, 6)      # sigma
    blob_a = u(0.22, 0.32, 6)        # amplitude (ground glass)
    blob_side = np.tile(np.array([0, 0, 0, 1, 1, 1]), (n, 1))
    n_per_lung = rng.integers(2, 4, size=(n, 2))
    blob_on = np.concatenate([np.arange(3)[None] < n_per_lung[:, :1], np.arange(3)[None] < n_per_lung[:, 1:]], 1)
    focal_side = rng.integers(0, 2, size=n)
    focal = dict(t=u(0.3, 0.85), r=u(-0.45, 0.45), s=u(0.055, 0.08), a=u(0.42, 0.58))
    is_covid, is_focal = labels == 0, labels == 1
    blob_on = blob_on & is_covid[:, None]
    # Lung_Opacity uses blob 0 only, with its own geometry and a flat-topped profile.
    blob_on[is_focal, 0] = True
    blob_t[is_focal, 0], blob_r[is_focal, 0] = focal["t"][is_focal], focal["r"][is_focal]
    blob_s[is_focal, 0], blob_a[is_focal, 0] = focal["s"][is_focal], focal["a"][is_focal]
    blob_side[is_focal, 0] = focal_side[is_focal]
    p.update(severity=sev, blob_t=blob_t, blob_r=blob_r, blob_s=blob_s, blob_a=blob_a,
             blob_side=blob_side.astype(np.int64), blob_on=blob_on, flat=is_focal)
    # Viral Pneumonia: 14 interstitial streaks radiating from the hila through both lungs, plus a faint haze.
    k = 14
    p.update(streak_side=np.tile(np.arange(k) % 2, (n, 1)).astype(np.int64), streak_t=u(0.2, 0.9, k),
             streak_r=u(-0.6, 0.7, k), streak_len=u(0.07, 0.14, k), streak_ang=u(-0.5, 0.5, k),
             streak_a=u(0.2, 0.3, k), streak_on=np.repeat((labels == 3)[:, None], k, 1))
    # Marker glyph.
    p.update(letter=rng.integers(0, 2, size=n).astype(np.int64), m_size=u(0.095, 0.14), m_bright=u(0.72, 1.0),
             m_angle=u(-0.26, 0.26), m_jitter=u(-0.02, 0.02, 2), m_stroke=u(0.09, 0.13))
    return p


# ----------------------------------------------------------------------------------------------- drawing

def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blur(img: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of (B,H,W) with a per-image sigma (in pixels), reflect padding."""
    smax = float(sigma_px.max())
    r = max(1, int(np.ceil(3 * smax)))
    offs = np.arange(-r, r + 1, dtype=np.float32)
    w = np.exp(-0.5 * (offs[None, :] / sigma_px[:, None]) ** 2)  # (B, 2r+1)
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    H, W = img.shape[1:]
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="reflect")
    out = np.zeros_like(img)
    for j in range(2 * r + 1):
        out += w[:, j, None, None] * p[:, j:j + H, :]
    p = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="reflect")
    out = np.zeros_like(img)
    for j in range(2 * r + 1):
        out += w[:, j, None, None] * p[:, :, j:j + W]
    return out


def _seg_dist(px, py, ax, ay, bx, by):
    """Distance from points (…,H,W) to segments a-b (…,1,1), broadcast."""
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy + 1e-9
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / ll, 0.0, 1.0)
    return np.sqrt((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2)


def _dilate(m: np.ndarray) -> np.ndarray:
    """3×3 binary dilation of (B,H,W) bool."""
    p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    H, W = m.shape[1:]
    out = np.zeros_like(m)
    for dy in range(3):
        for dx in range(3):
            out |= p[:, dy:dy + H, dx:dx + W]
    return out



def _blobs(q: dict, g: dict) -> np.ndarray:
    """Gaussian ground-glass blobs (COVID) or one flat-topped dense focus (Lung_Opacity) per row."""
    f32 = np.float32
    X, Y, lw, yt, yb = g["X"], g["Y"], g["lw"], g["yt"], g["yb"]
    B = X.shape[0]
    col = lambda a: a.astype(f32).reshape(B, 1, 1)  # noqa: E731
    out = np.zeros((B,) + X.shape[1:], f32)
    flat = col(q["flat"])
    for k in range(q["blob_t"].shape[1]):
        on = q["blob_on"][:, k]
        if not on.any():
            continue
        side = q["blob_side"][:, k]
        t_k, r_k = col(q["blob_t"][:, k]), col(q["blob_r"][:, k])
        lwk = lw * (0.3 + 0.7 * np.sqrt(t_k))
        sign, xc = col(np.where(side == 0, -1.0, 1.0)), col(np.where(side == 0, 0.31, 0.69))
        bx = xc + sign * (0.03 * t_k + r_k * lwk)
        by = yt + t_k * (yb - yt)
        d2 = ((X - bx) ** 2 + (Y - by) ** 2) / col(q["blob_s"][:, k]) ** 2
        prof = (1 - flat) * np.exp(-0.5 * d2) + flat * _smooth((1.6 - np.sqrt(d2)) / 0.6)
        out += prof * col(q["blob_a"][:, k] * on)
    return out


def _streaks(q: dict, g: dict, px: float) -> np.ndarray:
    """Interstitial streaks (Viral Pneumonia): short lines radiating outwards and down from the hila."""
    f32 = np.float32
    X, Y, lw, yt, yb = g["X"], g["Y"], g["lw"], g["yt"], g["yb"]
    B = X.shape[0]
    col = lambda a: a.astype(f32).reshape(B, 1, 1)  # noqa: E731
    out = np.zeros((B,) + X.shape[1:], f32)
    width = max(0.011, 0.7 * px)
    for k in range(q["streak_t"].shape[1]):
        side = q["streak_side"][:, k]
        sign, xc = col(np.where(side == 0, -1.0, 1.0)), col(np.where(side == 0, 0.31, 0.69))
        t_k, r_k = col(q["streak_t"][:, k]), col(q["streak_r"][:, k])
        lwk = lw * (0.3 + 0.7 * np.sqrt(t_k))
        ax, ay = xc + sign * r_k * lwk, yt + t_k * (yb - yt)
        ang = col(q["streak_ang"][:, k]) + sign * 0.6
        half = col(q["streak_len"][:, k]) / 2
        dx, dy = np.cos(ang) * half * sign, np.sin(ang) * half
        d = _seg_dist(X, Y, ax - dx, ay - dy, ax + dx, ay + dy)
        np.maximum(out, np.exp(-0.5 * (d / width) ** 2) * col(q["streak_a"][:, k]), out=out)
    return out


def _glyph(q: dict, size: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The marker's coverage (B,k,k) in [0,1] inside its corner window, and the window's (rows, cols) indices."""
    f32 = np.float32
    B = len(q["corner"])
    col = lambda a: np.asarray(a, f32).reshape(B, 1, 1)  # noqa: E731
    k = min(size, int(np.ceil((MARKER_BOX + 0.06) * size)))
    corner = q["corner"]
    ox = np.where(corner % 2 == 0, 0, size - k)
    oy = np.where(corner < 2, 0, size - k)
    ar = np.arange(k)
    wx = (ox[:, None] + ar[None, :])[:, None, :]  # (B,1,k)
    wy = (oy[:, None] + ar[None, :])[:, :, None]  # (B,k,1)
    xx, yy = ((wx + 0.5) / size).astype(f32), ((wy + 0.5) / size).astype(f32)
    mx = np.where(corner % 2 == 0, MARKER_BOX / 2, 1 - MARKER_BOX / 2) + q["m_jitter"][:, 0]
    my = np.where(corner < 2, MARKER_BOX / 2, 1 - MARKER_BOX / 2) + q["m_jitter"][:, 1]
    ms, ma = col(q["m_size"]), col(q["m_angle"])
    ca, sa = np.cos(ma), np.sin(ma)
    gx = ((xx - col(mx)) * ca + (yy - col(my)) * sa) / ms + 0.5
    gy = (-(xx - col(mx)) * sa + (yy - col(my)) * ca) / ms + 0.5
    segs = GLYPHS[q["letter"]]  # (B, 7, 2, 2)
    dist = np.full((B, k, k), 9.0, f32)
    for j in range(segs.shape[1]):
        a, b = segs[:, j, 0], segs[:, j, 1]
        dist = np.minimum(dist, _seg_dist(gx, gy, col(a[:, 0]), col(a[:, 1]), col(b[:, 0]), col(b[:, 1])))
    aa = (1.0 / size) / ms  # one pixel in glyph units
    glyph = 1.0 - _smooth((dist - col(q["m_stroke"]) + aa) / (2 * aa))
    return glyph.astype(f32), (wy, wx)

def _per_image(B: int):
    """Reshape a per-image parameter (B,) or (B, k) so it broadcasts over (B, H, W) grids."""
    return lambda a: a.reshape(B, *([1] * (2 if a.ndim == 1 else 3)))


def _pose(q: dict, size: int, col) -> tuple[np.ndarray, np.ndarray, float]:
    """Patient pose: canonical coordinates X, Y of every pixel and one pixel in canonical units (approximately)."""
    f32 = np.float32
    g = (np.arange(size, dtype=f32) + 0.5) / size
    xx, yy = g[None, None, :], g[None, :, None]
    cx, cy = 0.5 + col(q["shift"][:, 0]), 0.5 + col(q["shift"][:, 1])
    c, s, sc = np.cos(col(q["rot"])), np.sin(col(q["rot"])), col(q["scale"])
    X = ((xx - cx) * c + (yy - cy) * s) / sc + 0.5
    Y = (-(xx - cx) * s + (yy - cy) * c) / sc + 0.5
    px = 1.0 / size
    return X, Y, px


def _chest(q: dict, X: np.ndarray, Y: np.ndarray, px: float, col) -> tuple[np.ndarray, np.ndarray, dict]:
    """Body, lungs, heart, ribs, clavicles and spine: (image, lung mask, lung geometry for the lesions)."""
    # Body: a super-ellipse torso plus neck, soft edge.
    bw = 0.44 * col(q["body_w"])
    body_d = np.abs((X - 0.5) / bw) ** 2.6 + np.abs((Y - 0.6) / 0.55) ** 2.6
    body = _smooth((1.0 - body_d) / 0.08)
    neck = _smooth((0.09 - np.abs(X - 0.5)) / (2 * px)) * (Y < 0.3)
    body = np.maximum(body, neck)

    # Lungs: tapered fields with a domed base; heart and mediastinum cut into them.
    lw, lh = 0.15 * col(q["lung_w"]), col(q["lung_h"])
    yt, yb = 0.49 - 0.31 * lh, 0.49 + 0.28 * lh
    heart_d = ((X - 0.565 - col(q["heart_dx"])) / (0.13 * col(q["heart"]))) ** 2 + \
              ((Y - 0.66) / (0.12 * col(q["heart"]))) ** 2
    mediast = (np.abs(X - 0.5) < 0.055) & (Y < 0.66)
    heart = (heart_d < 1.0) | mediast
    lungs = []
    for side, xc in ((0, 0.5 - 0.19), (1, 0.5 + 0.19)):
        t = (Y - yt) / (yb - yt)
        tc = np.clip(t, 0.0, 1.0)
        w = lw * (0.3 + 0.7 * np.sqrt(tc))
        sign = -1.0 if side == 0 else 1.0  # lateral direction
        xcen = xc + sign * 0.03 * tc
        r = (X - xcen) / w * sign           # + lateral, - medial
        base = 1.0 - 0.13 * (1.0 - np.clip(r, -1, 1) ** 2)
        inside = (np.abs(r) < 1.0) & (t > 0.0) & (t < base)
        lungs.append(inside & ~heart)
    lung = lungs[0] | lungs[1]

    # Ribs: curved periodic bands over the chest, stronger laterally.
    phase = (Y - 0.9 * (X - 0.5) ** 2 * 2.2 + 0.12 * np.abs(X - 0.5)) / col(q["rib_gap"]) + col(q["rib_phase"])
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6
    ribs *= ((np.abs(X - 0.5) < 0.4) & (Y > 0.14) & (Y < 0.84)) * col(q["rib_amp"])
    clav = np.exp(-((Y - 0.17 - 0.25 * (np.abs(X - 0.5) - 0.18) ** 2 * 4) / 0.018) ** 2) * \
        (np.abs(X - 0.5) < 0.3) * 0.12
    spine = np.exp(-((X - 0.5) / 0.035) ** 2) * (Y > 0.1) * 0.07

    img = 0.04 + body * col(q["body_level"]) + spine * body
    lung_f = lung.astype(np.float32)
    img = img - lung_f * (col(q["body_level"]) - col(q["lung_level"])) * (1.05 - 0.25 * (1 - (Y - 0.2)))
    img = img + heart * body * 0.12 + (ribs + clav) * body
    return img, lung, dict(X=X, Y=Y, lw=lw, yt=yt, yb=yb)


def _lesions(q: dict, geo: dict, lung: np.ndarray, size: int, px: float, col) -> np.ndarray:
    """Lesion intensity inside the lungs (B, H, W), drawn only for the rows that have them."""
    B = len(q["labels"])
    lung_f = lung.astype(np.float32)
    les = np.zeros((B, size, size), np.float32)
    blob_rows = np.flatnonzero(q["blob_on"].any(1))
    if len(blob_rows):
        les[blob_rows] = _blobs({k: v[blob_rows] for k, v in q.items()}, {k: v[blob_rows] for k, v in geo.items()})
    streak_rows = np.flatnonzero(q["streak_on"][:, 0])
    if len(streak_rows):
        les[streak_rows] = _streaks({k: v[streak_rows] for k, v in q.items()},
                                    {k: v[streak_rows] for k, v in geo.items()}, px) \
            + 0.06 * lung_f[streak_rows]
    return les * col(q["severity"]) * LESION_GAIN * lung_f


def _marker(q: dict, img: np.ndarray, size: int, col) -> np.ndarray:
    """Draw the marker glyph on the film (in place) inside a corner window, never a flat block; its mask."""
    B = len(q["labels"])
    glyph, (wy, wx) = _glyph(q, size)
    bi = np.arange(B)[:, None, None]
    win = img[bi, wy, wx]
    img[bi, wy, wx] = win * (1 - glyph) + col(q["m_bright"]) * glyph
    marker = np.zeros((B, size, size), bool)
    marker[bi, wy, wx] = _dilate(glyph > 0.25)
    return marker


def _draw(p: dict, sl: slice, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Render images sl of the parameter set: returns uint8 image, lung, lesion and marker masks (B,H,W)."""
    q = {k: v[sl] for k, v in p.items()}
    f32 = np.float32
    col = _per_image(len(q["labels"]))
    X, Y, px = _pose(q, size, col)
    img, lung, geo = _chest(q, X, Y, px, col)
    les = _lesions(q, geo, lung, size, px, col)
    img = img + les
    lesion = (les > 0.09 * LESION_GAIN) & lung

    # Film: gradient, blur, gamma, noise.
    img = img + col(q["grad"][:, 0]) * (X - 0.5) + col(q["grad"][:, 1]) * (Y - 0.5)
    img = _blur(img.astype(f32), (q["blur"] * size / 64.0).astype(f32))
    img = np.clip(img, 0.0, 1.0) ** col(q["gamma"])
    marker = _marker(q, img, size, col)

    img = img + rng.normal(0.0, 1.0, size=img.shape).astype(f32) * col(q["noise"])
    out = np.clip(np.round(np.clip(img, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return {"image": out, "lung": lung.astype(np.uint8), "lesion": lesion.astype(np.uint8),
            "marker": marker.astype(np.uint8)}


def _chunk(size: int) -> int:
    """Images per drawing batch: about 2M pixels, a function of size only (so output never depends on memory)."""
    return max(4, (1 << 21) // (size * size))


def _iter_chunks(p: dict, n: int, size: int, seed: int):
    step = _chunk(size)
    for i, start in enumerate(range(0, n, step)):
        sl = slice(start, min(n, start + step))
        rng = np.random.default_rng([seed, 0xF11, VERSION, i])
        yield sl, _draw(p, sl, size, rng)


# ----------------------------------------------------------------------------------------------- public API

def _attributes(p: dict, i: int, lesion_area: int, path: str) -> dict:
    label = int(p["labels"][i])
    on = p["blob_on"][i] & (p["blob_a"][i] > 0)
    if label in (0, 1):
        left = bool((on & (p["blob_side"][i] == 0)).any())
        right = bool((on & (p["blob_side"][i] == 1)).any())
    else:
        left = right = label == 3
    return {"path": path, "class": CLASSES[label], "label": label, "split": str(p["splits"][i]),
            "marker_corner": CORNERS[int(p["corner"][i])],
            "marker_in_class_corner": int(p["corner"][i] == CLASS_CORNER[label]),
            "marker_letter": LETTERS[int(p["letter"][i])], "marker_size": round(float(p["m_size"][i]), 4),
            "marker_brightness": round(float(p["m_bright"][i]), 4), "marker_angle": round(float(p["m_angle"][i]), 4),
            "lesion_type": LESION_TYPE[label], "lesion_left": int(left), "lesion_right": int(right),
            "lesion_area": int(lesion_area), "severity": round(float(p["severity"][i]), 4) if label != 2 else 0.0}


def relpaths(labels: np.ndarray) -> list[str]:
    """`<class>/images/<class>-<n>.png`, n counting from 1 within each class in row order."""
    counters = {c: 0 for c in range(len(CLASSES))}
    out = []
    for lab in labels:
        counters[int(lab)] += 1
        cls = CLASSES[int(lab)]
        out.append(f"{cls}/images/{cls}-{counters[int(lab)]}.png")
    return out


def generate(n: int = 2400, size: int = 64, confounder: float = 0.9, seed: int = 0) -> SynthCXR:
    """All n images in memory (use write_tree for large sizes: it streams chunk by chunk)."""
    check_args(n, size, confounder)
    p = _params(n, confounder, seed)
    paths = relpaths(p["labels"])
    arrs = {k: np.zeros((n, size, size), np.uint8) for k in ("image", "lung", "lesion", "marker")}
    for sl, out in _iter_chunks(p, n, size, seed):
        for k in arrs:
            arrs[k][sl] = out[k]
    attrs = [_attributes(p, i, int(arrs["lesion"][i].sum()), paths[i]) for i in range(n)]
    return SynthCXR(images=arrs["image"], lung=arrs["lung"], lesion=arrs["lesion"], marker=arrs["marker"],
                    labels=p["labels"], splits=p["splits"], attributes=attrs)


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def manifest(n: int, size: int, confounder: float, seed: int) -> dict:
    """The arguments that define a SynthCXR tree (stored as synthcxr.json; equal manifests → identical files)."""
    return {"generator": "synthcxr", "version": VERSION, "n": int(n), "size": int(size),
            "confounder": float(confounder), "seed": int(seed)}


def write_tree(root: str | Path, n: int = 2400, size: int = 64, confounder: float = 0.9, seed: int = 0,
               progress: Callable[[float, str], None] | None = None) -> dict:
    """Generate and write the dataset tree under root (created; must be empty or absent).

    Writes `<class>/{images,masks,lesion_masks,marker_masks}/<class>-<n>.png` (masks 0/255), `splits.csv`
    (path,split), `attributes.csv` (per-image known attributes) and `synthcxr.json`. Returns the manifest with
    `counts` ({class: {split: n}}) added.
    """
    check_args(n, size, confounder)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    p = _params(n, confounder, seed)
    paths = relpaths(p["labels"])
    for cls in CLASSES:
        for sub in ("images", "masks", "lesion_masks", "marker_masks"):
            (root / cls / sub).mkdir(parents=True, exist_ok=True)
    attrs: list[dict] = []
    done = 0
    for sl, out in _iter_chunks(p, n, size, seed):
        for j, i in enumerate(range(sl.start, sl.stop)):
            rel = paths[i]
            cls_dir, name = rel.split("/images/")
            _write(root / rel, _png_bytes(out["image"][j]))
            _write(root / cls_dir / "masks" / name, _png_bytes(out["lung"][j] * 255))
            _write(root / cls_dir / "lesion_masks" / name, _png_bytes(out["lesion"][j] * 255))
            _write(root / cls_dir / "marker_masks" / name, _png_bytes(out["marker"][j] * 255))
            attrs.append(_attributes(p, i, int(out["lesion"][j].sum()), rel))
        done = sl.stop
        if progress:
            progress(done / n, f"drew and wrote {done}/{n} images")
    with open(root / "splits.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "split"])
        w.writerows([[a["path"], a["split"]] for a in attrs])
    with open(root / "attributes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ATTRIBUTE_FIELDS), lineterminator="\n")
        w.writeheader()
        w.writerows(attrs)
    man = manifest(n, size, confounder, seed)
    (root / "synthcxr.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    man["counts"] = counts(p["labels"], p["splits"])
    return man


def counts(labels: np.ndarray, splits: np.ndarray, classes=CLASSES) -> dict:
    """{class: {split: n}} with every class and split present."""
    return {c: {s: int(((labels == i) & (splits == s)).sum()) for s in SPLITS} for i, c in enumerate(classes)}


def read_attributes(root: str | Path) -> dict[str, dict]:
    """attributes.csv as {relative path: attributes} (numbers parsed); {} when absent."""
    f = Path(root) / "attributes.csv"
    if not f.exists():
        return {}
    out = {}
    with open(f, newline="") as fh:
        for row in csv.DictReader(fh):
            rec = {}
            for k, v in row.items():
                try:
                    rec[k] = int(v)
                except (TypeError, ValueError):
                    try:
                        rec[k] = float(v)
                    except (TypeError, ValueError):
                        rec[k] = v
            out[row["path"]] = rec
    return out


def corner_boxes(size: int, box: float = MARKER_BOX) -> np.ndarray:
    """Bool (size, size) mask of the four corner squares where markers can lie (blank it to hide the marker)."""
    k = int(np.ceil(box * size + 0.03 * size))
    m = np.zeros((size, size), bool)
    m[:k, :k] = m[:k, -k:] = m[-k:, :k] = m[-k:, -k:] = True
    return m


__all__ = ["CLASSES", "SPLITS", "CORNERS", "CLASS_CORNER", "SynthCXR", "generate", "write_tree", "manifest",
           "counts", "read_attributes", "relpaths", "assign_splits", "corner_boxes"]
