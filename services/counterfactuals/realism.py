"""Realism of stored counterfactuals: FD / KID / sharpness per (model, method, preset, target) group, against real
held-out images of the target class, in the feature space of the dataset's independent classifier B.

Bits/dim favours smooth images; these figures do not (a blurry set has a low sharpness ratio and a high FD).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from services.platform.settings import resolve_device
from services.counterfactuals.runs import load_arrays_of
from services.data.datasets import load_arrays
from services.models.independent import load_independent
from services.models.registry import get_model

REAL_SPLIT = "test"
MAX_REAL = 200


@dataclass
class RealismRow:
    model_id: int
    method: str
    preset: str | None
    target: str
    n: int
    n_real: int
    fd: float
    kid: float
    sharpness: float
    cross_flip: float | None   # share of the group's results that flip B too
    feature_model_id: int

    def as_dict(self) -> dict:
        return asdict(self)


def realism_table(rows: list[dict], device: str | None = None) -> tuple[list[RealismRow], str | None]:
    """Realism per group of stored rows (groups of ≥ 2); ([], reason) when it cannot be computed."""
    from core.metrics.realism import realism
    if not rows:
        return [], "no results"
    dev = resolve_device(device)
    model = get_model(rows[0]["model_id"])
    if model is None:
        return [], "the results' model is gone"
    B, brow = load_independent(model["dataset_id"], dev)
    if B is None:
        return [], "this dataset has no independent classifier (its name ends with '-independent'; the demo trains one)"
    arr = load_arrays(model["dataset_id"])
    held = arr.split_index(REAL_SPLIT)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["model_id"] == brow["id"]:
            continue
        groups.setdefault((r["model_id"], r["method"], r["preset"], r["target"]), []).append(r)
    out = []
    for (mid, method, preset, tgt), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        imgs = []
        for r in rs:
            try:
                imgs.append(load_arrays_of(r)["counterfactual"])
            except FileNotFoundError:
                continue
        real_rows = held[arr.labels[held] == tgt][:MAX_REAL]
        if len(imgs) < 2 or len(real_rows) < 2:
            continue
        m = realism(B, np.stack(imgs), arr.images[real_rows], dev)
        xf = [(r.get("metrics") or {}).get("cross_model", {}).get("flipped") for r in rs]
        xf = [v for v in xf if v is not None]
        out.append(RealismRow(model_id=mid, method=method, preset=preset, target=arr.classes[tgt], n=len(imgs),
                              n_real=len(real_rows), fd=m["fd"], kid=m["kid"], sharpness=m["sharpness"],
                              cross_flip=float(np.mean(xf)) if xf else None, feature_model_id=int(brow["id"])))
    return out, None if out else "no group of two or more results of the same model, method and target"
