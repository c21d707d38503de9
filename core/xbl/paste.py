"""Counterexamples from the bad exemplar: its hot region (what the model looked at for the wrong reason) is cut
out and pasted at a random place of every training image, label kept, so that whatever lies there stops
predicting a class wherever it appears.

R = dilate(E_bad ≥ τ): the bad exemplar's hot region; its bounding box (at most max_area of the image: else the
square of that area around the map's peak) is the patch P with mask M. Each training image x_i gets
x̃_i = x_i with M ⊙ P (flipped at random, per image) pasted at a uniformly random position, labelled y_i.
L = CE(x, y) + λ · CE(x̃, y), both halves in one forward pass (core.xbl.counterexamples' loss). The draws follow the run's seed.
The method reads the user's bad exemplar: a pair whose bad map lies on the lungs pastes lung, which teaches little
(the random-pair control shows how much the choice of exemplar matters).
"""
from __future__ import annotations

import math

import torch

from core.xbl import XBLMethod, dilate, exemplar_map
from core.xbl.counterexamples import Counterexamples


def paste_box(region: torch.Tensor, peak: tuple[int, int], max_area: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the region's bounding box, or a square of max_area around the peak when larger."""
    H, W = region.shape
    ys, xs = torch.nonzero(region, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    if (y1 - y0) * (x1 - x0) <= max_area * H * W:
        return y0, y1, x0, x1
    side = max(2, int(math.sqrt(max_area * H * W)))
    cy, cx = peak
    y0, x0 = min(max(0, cy - side // 2), H - side), min(max(0, cx - side // 2), W - side)
    return y0, y0 + side, x0, x0 + side


class PasteCounterexamples(Counterexamples):
    """Counterexamples' loss (CE(x) + λ · CE(x̃)) with the bad exemplar's patch pasted instead of the good region kept."""

    name = "bad_paste"
    defaults = {"lam": 1.0, "tau": 0.5, "dilate_px": 1, "max_area": 0.1}

    def prepare(self, model, good, bad, train):
        XBLMethod.prepare(self, model, good, bad, train)  # the reference triplet only: no good region to keep
        emap = exemplar_map(model, bad)  # (H, W) in [0, 1]
        region = dilate(emap >= float(self.tau), int(self.dilate_px)) > 0
        if not bool(region.any()):
            raise ValueError("the bad exemplar's map is empty: no region to paste")
        peak = divmod(int(emap.argmax()), emap.shape[1])
        y0, y1, x0, x1 = paste_box(region, peak, float(self.max_area))
        img = bad.image if bad.image.dim() == 3 else bad.image[None]
        self.patch = img[:, y0:y1, x0:x1].float()  # (C, h, w) in [0, 1]
        self.mask = region[y0:y1, x0:x1].float() if (y1 - y0) * (x1 - x0) < region.numel() else None
        if self.mask is None or float(self.mask.sum()) == 0:
            self.mask = torch.ones(self.patch.shape[-2:], device=self.patch.device)
        self.gen = torch.Generator().manual_seed(int(self.run_seed))

    def counterexamples(self, x: torch.Tensor) -> torch.Tensor:
        n, (h, w), (H, W) = x.shape[0], self.patch.shape[-2:], x.shape[-2:]
        ty = torch.randint(0, H - h + 1, (n,), generator=self.gen).tolist()
        tx = torch.randint(0, W - w + 1, (n,), generator=self.gen).tolist()
        flips = torch.randint(0, 4, (n,), generator=self.gen).tolist()
        p, m = self.patch.to(x.device), self.mask.to(x.device)
        out = x.clone()
        for i in range(n):
            dims = [d for d, bit in ((-1, 1), (-2, 2)) if flips[i] & bit]
            pi, mi = (p.flip(dims), m.flip(dims)) if dims else (p, m)
            win = out[i, :, ty[i]:ty[i] + h, tx[i]:tx[i] + w]
            out[i, :, ty[i]:ty[i] + h, tx[i]:tx[i] + w] = mi * pi + (1 - mi) * win
        return out
