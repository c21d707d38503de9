"""The XAIDIFF taxonomy of generated examples (docs/architecture.md, Definitions): counterfactual / adversarial /
affirmative / none.

ε = the 95th percentile of bits/dim on held-out real images. An example whose prediction flipped to the target is a
*counterfactual* if bpd ≤ ε, else *adversarial*; one that keeps the original class with bpd ≤ ε is *affirmative*;
everything else (a third class, or the original class off the data distribution) is *none*. Without a bpd (no
density model to score it) the example is *unclassified*, never a counterfactual on its flip alone.

Bits/dim alone lets many pixel-space adversarial examples through (their perturbation costs few bits). A second,
optional test uses the purification drop (core/counterfactual/purify.py) with its own threshold ε_drop (the 95th
percentile on held-out real images): a flipped example with a drop above ε_drop is *adversarial* too.
"""
from __future__ import annotations

import math

import numpy as np

CATEGORIES = ("counterfactual", "adversarial", "affirmative", "none")
UNCLASSIFIED = "unclassified"  # no density model: the category cannot be decided


def bpd_threshold(real_bpd, q: float = 95.0) -> float:
    """ε: the q-th percentile of bits/dim of held-out real images (NaN entries ignored)."""
    a = np.asarray(real_bpd, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise ValueError("no finite bits/dim values to set the threshold from")
    return float(np.percentile(a, q))


def categorize(pred: int, original: int, target: int, bpd: float | None, eps: float | None,
               drop: float | None = None, drop_eps: float | None = None) -> str:
    """Category of one generated example: pred = argmax f(x'), original = argmax f(x), target = requested class;
    drop / drop_eps: the purification drop and its threshold (optional second test)."""
    if bpd is None or eps is None or (isinstance(bpd, float) and math.isnan(bpd)):
        return UNCLASSIFIED
    likely = bpd <= eps and not (drop is not None and drop_eps is not None and drop > drop_eps)
    if pred == target and target != original:
        return "counterfactual" if likely else "adversarial"
    if pred == original:
        return "affirmative" if likely else "none"
    return "none"


def categorize_batch(pred, original, target, bpd, eps) -> list[str]:
    bpd = [None] * len(pred) if bpd is None else bpd
    return [categorize(int(p), int(o), int(t), None if b is None else float(b), eps)
            for p, o, t, b in zip(pred, original, target, bpd)]


def shares(categories: list[str | None]) -> dict[str, float]:
    """Share of each category among the classified examples (NaN when none is)."""
    known = [c for c in categories if c is not None and c != UNCLASSIFIED]
    return {c: (sum(k == c for k in known) / len(known) if known else float("nan")) for c in CATEGORIES}
