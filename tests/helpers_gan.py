"""A tiny two-class toy for the GAN tests: a bright blob upper-left (A) or lower-right (B), a corner tag flag."""
from __future__ import annotations

import numpy as np

from core.generative.gan import AttrGroup, AttrSpec

SPEC = AttrSpec([AttrGroup("class", "onehot", ["A", "B"]), AttrGroup("tag", "flag")])


def toy_images(n: int, size: int = 32, seed: int = 0):
    """uint8 images (n, size, size), labels (n,), attribute vectors (n, 3) under SPEC."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    tag = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:size, :size] / size
    base = rng.uniform(0.15, 0.55, n)
    imgs = np.empty((n, size, size))
    for i in range(n):
        cx, cy = (0.3, 0.3) if y[i] == 0 else (0.7, 0.7)
        cx, cy = cx + rng.normal(0, 0.03), cy + rng.normal(0, 0.03)
        im = base[i] + 0.4 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.012)
        if tag[i]:
            s = size // 8
            im[s // 2:s // 2 + s, -s - s // 2:-s // 2] = 0.95
        imgs[i] = im + rng.normal(0, 0.01, im.shape)
    imgs = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
    attrs = SPEC.encode([{"class": "AB"[c], "tag": int(t)} for c, t in zip(y, tag)])
    return imgs, y, attrs
