"""RRR-style penalty from two clicks: the bad exemplar's hot region becomes a penalty region for every image.

Region R = dilate(E_bad ≥ τ) where E_bad is the bad exemplar's map as the user saw it (E of
docs/architecture.md, Definitions). For every training image: L = CE + λ · mean_i Σ_pixels (R ⊙ ∂/∂x_i Σ_k log p_k)², so
nothing in that region may move any class probability (all classes at once, through the input gradient, which no feature
routing can hide). Limitation: R covers where the bad exemplar's shortcut lies (one marker corner), not where other
images' lie.
"""
from __future__ import annotations

from core.xbl import XBLMethod, dilate, exemplar_map
from core.xbl.rrr import input_gradient_penalty


class PenaltyMask(XBLMethod):
    name = "penalty_mask"
    defaults = {"lam": 0.001, "tau": 0.5, "dilate_px": 2}

    def prepare(self, model, good, bad, train):
        super().prepare(model, good, bad, train)
        self.region = dilate(exemplar_map(model, bad) >= float(self.tau), int(self.dilate_px))[None]  # (1, H, W)
        if float(self.region.sum()) == 0:
            raise ValueError("the bad exemplar's map is empty: nothing to penalise")

    def loss(self, model, x, y, idx):
        ce, pen, feats, logits = input_gradient_penalty(model, x, y, self.region)
        term = pen.mean()
        st = {"ce": ce.detach(), "expl": term.detach()}
        st.update(self.diagnostics(model, feats, logits, x.detach(), y))
        return ce + float(self.lam) * term, st
