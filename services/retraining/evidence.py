"""Held-out evidence of a retrain: per-image measures of parent / controls / child on val, test and test_shifted,
and the intervals, effects and verdict of core.xbl.evidence. Train images never enter (core.data.roles).

heldout_sets(arrays) → EvalSets of the held-out splits; measure(model, sets) → per-image arrays per split;
for_pair(parent, child) → the evidence of one child alone: the one stored with it by its retrain (its own seed,
its own plain and random-pair controls) when the parent asked for is its parent, else measured now and cached;
for_retrain(R) → the group's evidence over every seed, stored with the retrain. The cache key fingerprints the
dataset's array cache and every model's checkpoint, so a changed dataset or model is measured again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_write
from core.data.roles import HELDOUT
from core.xbl.evidence import MEASURES, Evidence, per_image, summarise
from services.data.datasets import cache_path, load_arrays
from services.models.config_schema import retrain_link
from services.models.registry import get_model, load_classifier
from services.models.retrain_models import get_retrain
from services.platform.settings import get_settings, resolve_device

__all__ = ["HELDOUT", "MEASURES", "heldout_sets", "measure", "for_pair", "for_retrain", "control_of"]
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


def control_of(child: dict, role: str = "control") -> int | None:
    """The registered control's id of a retrained child (role 'control' or 'random_control'; None without one)."""
    link = retrain_link(child.get("config"))
    return getattr(link, f"{role}_id") if link is not None else None


def for_retrain(retrain_id: int) -> dict:
    """The group's evidence over every seed (stored by the retrain) with its retrain id and seed models."""
    r = get_retrain(int(retrain_id))
    if r is None:
        raise ValueError(f"no retrain {retrain_id}")
    if not r["evidence"]:
        raise ValueError(f"retrain {retrain_id} has no stored evidence")
    return {**r["evidence"], "retrain_id": r["id"], "parent_id": r["parent_id"], "method": r["method"],
            "seed_models": r["config"].get("seed_models") or [], "source": "stored with the retrain"}


def for_pair(parent_id: int, child_id: int, device: str | None = None) -> dict:
    """The evidence of child C alone against parent P: {'splits', 'effect', 'effect_recipe', 'effect_choice',
    'effect_parent', 'effect_vs', 'roles', 'seeds', 'interval', 'describes', 'verdict', 'control_id',
    'random_control_id', 'source'}."""
    parent, child = get_model(int(parent_id)), get_model(int(child_id))
    if parent is None or child is None:
        raise ValueError(f"no model {parent_id if parent is None else child_id}")
    if parent["dataset_id"] != child["dataset_id"]:
        raise ValueError("parent and child were trained on different datasets: nothing to compare")
    stored = (child.get("config") or {}).get("evidence")
    ids = {r: control_of(child, r) for r in ("control", "random_control")}
    if stored and child.get("parent_id") == parent["id"] and "roles" in stored:
        return {**stored, "control_id": ids["control"], "random_control_id": ids["random_control"],
                "source": "stored with the retrain"}
    models = {"parent": parent, "child": child, **{r: get_model(i) if i is not None else None for r, i in ids.items()}}
    cache = _cache_file(models)
    if cache is not None and cache.exists():
        try:
            return {**json.loads(cache.read_text()), "source": "measured earlier (cached)"}
        except ValueError:
            pass  # a damaged cache file is measured again
    out = _measure_now(models, device)
    if cache is not None:
        atomic_write(cache, lambda tmp: Path(tmp).write_text(json.dumps(out)))
    return out


def _measure_now(models: dict, device: str | None) -> dict:
    dev = resolve_device(device)
    sets = heldout_sets(load_arrays(models["child"]["dataset_id"], mmap=True), dev, lazy=True)
    runs = {}
    for who, m in models.items():
        if m is not None:
            model, _ = load_classifier(int(m["id"]), dev)
            runs[who] = measure(model, sets)
    one = lambda who: [runs[who]] if who in runs else None  # noqa: E731
    ev: Evidence = summarise(runs["parent"], [runs["child"]], one("control"), one("random_control"),
                             describes=f"model #{models['child']['id']} alone, measured now")
    return {**ev.to_dict(), "control_id": models["control"]["id"] if "control" in runs else None,
            "random_control_id": models["random_control"]["id"] if "random_control" in runs else None,
            "source": "measured now"}


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = p.stat() if p.exists() else None
        h.update(f"{p}|{st.st_mtime_ns if st else 0}|{st.st_size if st else -1};".encode())
    return h.hexdigest()[:16]


def _cache_file(models: dict) -> Path | None:
    """Where evidence measured now is kept, named by the models' ids and a fingerprint of the dataset's array cache
    and every checkpoint (path, mtime, size): the page, the HTML export and the CLI measure once, and a rebuilt
    dataset or a replaced checkpoint is measured again."""
    p = cache_path(int(models["child"]["dataset_id"]))
    if not p.exists():
        return None
    present = [m for m in models.values() if m is not None]
    stamp = _fingerprint([p] + [Path(m["checkpoint"]) for m in present])
    tag = {"parent": "p", "child": "c", "control": "k", "random_control": "r"}
    ids = "-".join(f"{tag[k]}{m['id']}" for k, m in models.items() if m is not None)
    return get_settings().path("cache", "evidence") / f"{ids}-{stamp}.json"
