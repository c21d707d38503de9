"""eXBL triplet explanation loss (docs/architecture.md, Definitions, the well-posed form) and its counterexample
variant.

exbl (reference): a_i = n(GradCAM_{y_i}(x_i) ⊙ x_i↓) with the graph kept (create_graph), p / q = the same for
the good / bad exemplar computed once with the parent, n = L2 normalisation, and
    L = CE + λ · mean_i max(‖a_i − p‖² − ‖a_i − q‖² + m, 0).
Because a, p, q are unit vectors, d+ − d− = 2·a·(q − p): the hinge switches off once an anchor leans far enough
toward p, its gradient moves a toward p and away from q, and the share of active triplets falls as training
proceeds (tests/test_xbl_loss.py). The authors' raw-CAM / MSE form is always active and linear in a: not used.

exbl_cf (variant): the same triplet plus CAIPI-style counterexamples built from the good exemplar's region
(see counterexamples.py) in one loss. A map loss alone lets the network route the marker's signal into feature
cells that lie on the lungs (the last block's receptive field spans the image), so the map moves while the
decision still reads the marker; the counterexamples make the marker stop paying.

Defaults were chosen by bench/exbl_effect.py's val-only rule (val accuracy and val AR / AP on the lung masks,
against the matched plain-CE control; never the marker masks, never test): exbl λ 0.1, margin 0.5 (its best
setting, yet no better than the control by the rule: val AP +0.009); exbl_cf λ 0.3, margin 0.1 (val AP +0.037,
the default method). Training anchors are taken through the head without dropout, like p and q.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.xbl import XBLMethod, cam as _cam, reference_anchor, training_anchors, triplet
from core.xbl.counterexamples import Counterexamples


class PlainCE(XBLMethod):
    """Plain cross-entropy fine-tune with the same loop: the control every method is compared with."""

    name = "ce"
    defaults: dict = {}


class Exbl(XBLMethod):
    """Reference eXBL: true-class GradCAM ⊙ image anchors in a triplet with the two exemplars.
    times_image=False drops the ⊙ x↓ (anchors are the normalised maps themselves)."""

    name = "exbl"
    defaults = {"lam": 0.1, "margin": 0.5, "times_image": True}

    def prepare(self, model, good, bad, train):
        super().prepare(model, good, bad, train)
        self.p = reference_anchor(model, good, bool(self.times_image))
        self.q = reference_anchor(model, bad, bool(self.times_image))

    def loss(self, model, x, y, idx):
        feats, logits = _cam.features_logits(model, x)
        ce = F.cross_entropy(logits, y)
        a = training_anchors(model, feats, logits, x, y, bool(self.times_image))
        term, st = triplet(a, self.p, self.q, float(self.margin))
        return ce + float(self.lam) * term, {"ce": ce.detach(), "expl": term.detach(), **st}


class ExblCounterexamples(Counterexamples):
    """eXBL triplet (reference form) plus counterexamples from the good exemplar's region, in one loss:
    L = CE(x) + λ · triplet(a(x)) + μ · CE(x̃). The triplet moves the maps; the counterexamples make the
    shortcut stop paying (a map loss alone lets the network route the marker's signal into cells on the lungs)."""

    name = "exbl_cf"
    defaults = {"lam": 0.3, "margin": 0.1, "times_image": True, "mu": 1.0, "tau": 0.5, "dilate_px": 2}

    def prepare(self, model, good, bad, train):
        super().prepare(model, good, bad, train)
        self.p = reference_anchor(model, good, bool(self.times_image))
        self.q = reference_anchor(model, bad, bool(self.times_image))

    def loss(self, model, x, y, idx):
        xc = self.counterexamples(x)
        n = x.shape[0]
        feats, logits = _cam.features_logits(model, torch.cat([x, xc]))
        ce = F.cross_entropy(logits[:n], y)
        ce_cf = F.cross_entropy(logits[n:], y)
        a = training_anchors(model, feats, logits, x, y, bool(self.times_image))
        term, st = triplet(a, self.p, self.q, float(self.margin))
        total = ce + float(self.lam) * term + float(self.mu) * ce_cf
        return total, {"ce": ce.detach(), "expl": term.detach(), "ce_cf": ce_cf.detach(),
                       "cf_wrong": (logits[n:].argmax(1) != y).float().mean().detach(), **st}
