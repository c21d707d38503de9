"""Splits grouped by patient: every image of one patient lands in the same split (no patient in train and test)."""
from __future__ import annotations

from collections import Counter

import numpy as np

from core.data.layouts import DEFAULT_FRACTIONS


def grouped_splits(labels: np.ndarray, groups: list[str | None], seed: int,
                   fractions: dict[str, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Seeded split names per image. Groups (patients) are stratified by their majority label and assigned whole,
    in a seeded order, to the split whose share of that label's images is still below its fraction. An image
    without a group is a group of its own."""
    labels = np.asarray(labels)
    keys = [g if g else f"\0image{i}" for i, g in enumerate(groups)]
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    names = [s for s in fractions if fractions[s] > 0]
    fr = np.array([fractions[s] for s in names], float)
    cum = np.cumsum(fr / fr.sum())
    rng = np.random.default_rng([seed, 0x6A7])
    by_label: dict[int, list[str]] = {}
    for k in sorted(members):
        major = Counter(labels[members[k]].tolist()).most_common(1)[0][0]
        by_label.setdefault(int(major), []).append(k)
    out = np.empty(len(labels), dtype=object)
    for lab, ks in sorted(by_label.items()):
        ks = [ks[j] for j in rng.permutation(len(ks))]
        total = sum(len(members[k]) for k in ks)
        done = 0
        for k in ks:
            share = done / max(total, 1)
            split = names[int(np.searchsorted(cum, share, side="right"))] if share < cum[-1] else names[-1]
            out[members[k]] = split
            done += len(members[k])
    return out.astype(str) if len(labels) else np.zeros(0, dtype=str)
