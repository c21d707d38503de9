"""Held-out evidence of a retrain: per-image measures of parent / control / child on val, test and test_shifted,
and the intervals, effects and verdict of core.xbl.evidence. Train images never enter (DESIGN.md §4b).

heldout_sets(arrays) → EvalSets of the held-out splits; measure(model, sets) → per-image arrays per split;
for_pair(parent, child) → the evidence a report shows: the one stored with the child by its retrain (K seeds,
its own control) when the parent asked for is the child's parent, else measured now (one seed, bootstrap).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_write
from core.xbl.evidence import HELDOUT, MEASURES, Evidence, per_image, summarise

__all__ = ["HELDOUT", "MEASURES", "heldout_sets", "measure", "for_pair", "control_of"]
CHUNK = 512  # held-out rows on the device at once when a report measures a large dataset


def _evalset(arrays, i, device: Any, lung: bool, marker: bool):
    import torch

    from core.xbl.finetune import EvalSet

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return EvalSet(t(arrays.images[i])[:, None], t(arrays.labels[i]).long(), t(arrays.lung[i]) if lung else None,
                   t(arrays.marker[i]) if marker else None)


@dataclass
class HeldOut:
    """One held-out split left in the (memory-mapped) cache: measured CHUNK rows at a time, so a report on the
    COVID-19 Radiography scale never holds the split's images and masks in memory at once."""
    arrays: Any
    idx: np.ndarray
    device: Any
    lung: bool
    marker: bool

    def chunks(self):
        for c in range(0, len(self.idx), CHUNK):
            chunk = _evalset(self.arrays, self.idx[c: c + CHUNK], self.device, self.lung, self.marker)
            self.arrays.release_pages()  # the copied rows' pages leave this process's resident memory
            yield chunk


def heldout_sets(arrays, device: Any, lazy: bool = False) -> dict:
    """{split: EvalSet} for the held-out splits the dataset has (lung / marker masks where every image has one);
    lazy=True gives HeldOut splits instead (read chunk by chunk by measure)."""
    out = {}
    for s in HELDOUT:
        i = arrays.split_index(s)
        if len(i) == 0:
            continue
        lung, marker = bool(arrays.has_lung[i].all()), bool(arrays.has_marker[i].all())
        out[s] = HeldOut(arrays, i, device, lung, marker) if lazy else _evalset(arrays, i, device, lung, marker)
    return out


def _per_image(model, ev, tau: float) -> dict:
    if not isinstance(ev, HeldOut):
        return per_image(model, ev, tau)
    parts = [per_image(model, c, tau) for c in ev.chunks()]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def measure(model, sets: dict, tau: float = 0.5) -> dict:
    """{split: {'correct', 'ar', 'ap', 'wr'}} per-image arrays for a model on the held-out sets."""
    return {s: _per_image(model, ev, tau) for s, ev in sets.items() if s in HELDOUT}


def control_of(child: dict) -> int | None:
    """The registered control's id of a retrained child (None for a child without one)."""
    cid = (child.get("config") or {}).get("control_id")
    return int(cid) if cid is not None else None


def for_pair(parent_id: int, child_id: int, device: str | None = None) -> dict:
    """{'splits', 'effect', 'effect_vs', 'seeds', 'interval', 'verdict', 'control_id', 'source'} for a report."""
    from services.datasets import load_arrays
    from services.models import get_model, load_classifier
    from services.settings import resolve_device

    parent, child = get_model(int(parent_id)), get_model(int(child_id))
    if parent is None or child is None:
        raise ValueError(f"no model {parent_id if parent is None else child_id}")
    if parent["dataset_id"] != child["dataset_id"]:
        raise ValueError("parent and child were trained on different datasets: nothing to compare")
    stored = (child.get("config") or {}).get("evidence")
    cid = control_of(child)
    if stored and child.get("parent_id") == parent["id"]:
        return {**stored, "control_id": cid, "source": "stored with the retrain"}
    cache = _cache_file(parent, child, cid)
    if cache is not None and cache.exists():
        try:
            return {**json.loads(cache.read_text()), "source": "measured earlier (cached)"}
        except ValueError:
            pass  # a damaged cache file is measured again
    dev = resolve_device(device)
    sets = heldout_sets(load_arrays(child["dataset_id"], mmap=True), dev, lazy=True)
    runs = {}
    for who, mid in (("parent", parent["id"]), ("child", child["id"]), ("control", cid)):
        if mid is not None and get_model(mid) is not None:
            model, _ = load_classifier(int(mid), dev)
            runs[who] = measure(model, sets)
    ev: Evidence = summarise(runs["parent"], [runs["child"]], [runs["control"]] if "control" in runs else None)
    out = {**ev.to_dict(), "control_id": cid if "control" in runs else None, "source": "measured now"}
    if cache is not None:
        atomic_write(cache, lambda tmp: Path(tmp).write_text(json.dumps(out)))
    return out


def _cache_file(parent: dict, child: dict, control_id: int | None) -> Path | None:
    """Where evidence measured now is kept: models are immutable, so the figures of (parent, child, control) on
    one version of the dataset's cache never change, and the page, the HTML export and the CLI measure once."""
    from services.datasets import cache_path
    from services.settings import get_settings

    p = cache_path(int(child["dataset_id"]))
    if not p.exists():
        return None
    stamp = int(p.stat().st_mtime)
    return get_settings().path("cache", "evidence") / f"p{parent['id']}-c{child['id']}-k{control_id}-{stamp}.json"
