"""Artefact injection: paste a patch (e.g. the dataset's marker glyph) at chosen boxes of held-out images and
measure, per box, the share of predictions that change and the mean probability shift toward each class.

A model that reads the artefact changes its predictions where the artefact is pasted; a model that ignores it
does not. No generator is involved: the probe is a direct intervention on the input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ProbePosition:
    """The outcome at one box: box = (r0, c0, r1, c1), half-open; shift[c] = mean Δp of class c; toward = the class
    with the largest mean shift; changed_other = share changed among images not already predicted `toward`."""

    box: tuple[int, int, int, int]
    changed: float
    shift: np.ndarray
    n: int
    toward: int = -1
    changed_other: float = float("nan")


def corner_boxes(size: int, h: int, w: int, centre: float = 0.1) -> list[tuple[int, int, int, int]]:
    """Four (h, w) boxes centred at `centre`·size from the two nearest edges of each corner: TL, TR, BL, BR."""
    out = []
    for corner in range(4):
        cy = centre * size if corner < 2 else (1 - centre) * size
        cx = centre * size if corner % 2 == 0 else (1 - centre) * size
        r0 = int(np.clip(round(cy - h / 2), 0, size - h))
        c0 = int(np.clip(round(cx - w / 2), 0, size - w))
        out.append((r0, c0, r0 + h, c0 + w))
    return out


def paste(images: np.ndarray, patch: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Composite patch over images (N, H, W) uint8 inside box: out = α·patch + (1 − α)·image (α, patch cropped to fit)."""
    r0, c0, r1, c1 = box
    h, w = r1 - r0, c1 - c0
    if h <= 0 or w <= 0 or r0 < 0 or c0 < 0 or r1 > images.shape[1] or c1 > images.shape[2]:
        raise ValueError(f"box {list(box)} does not fit inside a {images.shape[1]}×{images.shape[2]} image")
    p = np.asarray(patch, dtype=np.float32)[:h, :w]
    a = np.asarray(alpha, dtype=np.float32)[:h, :w]
    if p.shape != (h, w) or a.shape != (h, w):
        raise ValueError(f"patch {patch.shape} is smaller than box {list(box)}")
    out = images.astype(np.float32).copy()
    out[:, r0:r1, c0:c1] = a * p + (1 - a) * out[:, r0:r1, c0:c1]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@torch.no_grad()
def _probs(classifier, images: np.ndarray, device, batch_size: int) -> np.ndarray:
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(images[s:s + batch_size]).float().div(255.0)[:, None].to(device)
        out.append(F.softmax(classifier(x), 1).cpu().numpy())
    return np.concatenate(out)


def artefact_probe(classifier, images: np.ndarray, patch: np.ndarray, alpha: np.ndarray,
                   boxes: list[tuple[int, int, int, int]], device="cpu", batch_size: int = 128) -> list[ProbePosition]:
    """Per box: share of images whose argmax changes when the patch is pasted there, and the mean Δp per class."""
    if len(images) == 0:
        raise ValueError("the artefact probe needs at least one image")
    was = classifier.training
    classifier.eval()
    try:
        p0 = _probs(classifier, images, device, batch_size)
        res = []
        for box in boxes:
            p1 = _probs(classifier, paste(images, patch, alpha, box), device, batch_size)
            ch = p1.argmax(1) != p0.argmax(1)
            shift = (p1 - p0).mean(0)
            toward = int(np.argmax(shift))
            other = p0.argmax(1) != toward
            res.append(ProbePosition(box=tuple(int(b) for b in box), changed=float(ch.mean()), shift=shift,
                                     n=len(images), toward=toward,
                                     changed_other=float(ch[other].mean()) if other.any() else float("nan")))
    finally:
        classifier.train(was)
    return res


def glyph_from_masks(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The artefact as (patch, alpha) from the image whose mask area is the median, cropped to the mask's bounding box.

    A mask may be dilated around the artefact (it then holds some background): the patch is the artefact's peak
    grey level and alpha its coverage, (v − background) / (peak − background) clipped to [0, 1] inside the mask,
    with the background the median of the box outside the mask (mask = alpha when there is no contrast).
    """
    areas = masks.reshape(len(masks), -1).sum(1)
    have = np.flatnonzero(areas > 0)
    if len(have) == 0:
        raise ValueError("no image has a non-empty artefact (marker) mask")
    k = have[np.argsort(areas[have])[len(have) // 2]]
    ys, xs = np.nonzero(masks[k])
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    v, m = images[k][sl].astype(np.float32), masks[k][sl] > 0
    peak = float(np.percentile(v[m], 95))
    bg = float(np.median(v[~m])) if (~m).any() else float(v[m].min())
    if peak - bg < 1.0:
        return v, m.astype(np.float32)
    alpha = np.where(m, np.clip((v - bg) / (peak - bg), 0.0, 1.0), 0.0).astype(np.float32)
    return np.full_like(v, peak), alpha
