"""CAIPI-style counterexamples from two clicks (Teso & Kersting 2019, adapted to exemplars).

G = dilate(E_good ≥ τ): the good exemplar's hot region (where the right reason lies). Each training image x_i
gets a counterexample x̃_i = G ⊙ x_i + (1 − G) ⊙ x_j, with x_j another random training image (drawn by the
run's seed: finetune() sets it, so K seeds draw K sets of partners), labelled y_i:
what lies outside the right region (the marker corner, whatever its class) now comes from a random image and
stops predicting the class. L = CE(x, y) + λ · CE(x̃, y), both halves in one forward pass.
Diagnostics: `active` here is still the reference triplet's; `cf_wrong` is the share of counterexamples the
model gets wrong (it falls as the shortcut stops paying).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.xbl import XBLMethod, cam as _cam, dilate, exemplar_map


class Counterexamples(XBLMethod):
    name = "counterexamples"
    defaults = {"lam": 1.0, "tau": 0.5, "dilate_px": 2}

    def prepare(self, model, good, bad, train):
        super().prepare(model, good, bad, train)
        self.region = dilate(exemplar_map(model, good) >= float(self.tau), int(self.dilate_px))  # (H, W)
        if float(self.region.sum()) == 0:
            raise ValueError("the good exemplar's map is empty: no region to keep")
        self.train = train
        self.gen = torch.Generator().manual_seed(int(self.run_seed))  # each seed its own draw

    def counterexamples(self, x: torch.Tensor) -> torch.Tensor:
        j = torch.randint(0, len(self.train), (x.shape[0],), generator=self.gen).to(self.train.x.device)
        other = self.train.x[j].float().div(255.0) if self.train.x.dtype == torch.uint8 else self.train.x[j]
        g = self.region.to(x.device)
        return g * x + (1 - g) * other

    def loss(self, model, x, y, idx):
        xc = self.counterexamples(x)
        n = x.shape[0]
        feats, logits = _cam.features_logits(model, torch.cat([x, xc]))
        ce = F.cross_entropy(logits[:n], y)
        ce_cf = F.cross_entropy(logits[n:], y)
        diag = self.diagnostics(model, feats, logits, x, y)  # the original half: the first n rows
        st = {"ce": ce.detach(), "expl": ce_cf.detach(),
              "cf_wrong": (logits[n:].argmax(1) != y).float().mean().detach(), **diag}
        return ce + float(self.lam) * ce_cf, st
