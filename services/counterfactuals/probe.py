"""Shortcut probes of a classifier on held-out images: artefact injection and counterfactual change mass.

Artefact injection pastes the dataset's marker glyph (cut from its marker masks, from a train / val image) or an
uploaded small patch at each corner (or a chosen box) of the held-out images and reports per position the share
of predictions that change and the mean probability shift per class. Change mass reads the model's stored
counterfactuals: the share of |Δ| in the marker box (and in the lungs) over the region's area share.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from services.platform.settings import resolve_device
from services.counterfactuals.runs import list_counterfactuals, load_arrays_of, marker_box
from services.data.datasets import load_arrays
from services.models.registry import load_classifier

PROBE_SPLIT = "test"        # held-out, iid: the split the probe reads
MAX_PATCH_SHARE = 0.5       # an uploaded patch may be at most half the image side


@dataclass
class ArtefactProbe:
    """The artefact probe of one model: positions [{box, changed, shift: {class: mean Δp}, toward, changed_other}]
    (toward: the class the artefact moves most; changed_other: share changed among images not predicted so)."""

    model_id: int
    split: str
    n: int
    artefact: str
    classes: list[str]
    positions: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChangeMass:
    """Mean change-mass ratios over a model's stored counterfactuals (NaN when it has none with the mask)."""

    model_id: int
    n: int
    marker_ratio: float
    lung_ratio: float


def load_patch(source: str | bytes | Path) -> tuple[np.ndarray, np.ndarray]:
    """(patch, alpha) from an image file or its bytes: grey levels 0–255, alpha from its alpha channel (else 1)."""
    from PIL import Image as PILImage

    name = "the uploaded patch" if isinstance(source, bytes) else str(source)
    try:
        im = PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        im.load()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name} is not a readable image ({exc})") from None
    rgba = np.asarray(im.convert("LA"), dtype=np.float32)
    return rgba[..., 0], rgba[..., 1] / 255.0


def marker_glyph(arrays) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's marker glyph, cut from a train / val image with a marker mask (never the probed split)."""
    from core.probe.artefact import glyph_from_masks

    rows = arrays.split_index("train", "val")
    rows = rows[arrays.has_marker[rows]]
    if len(rows) == 0:
        raise ValueError("this dataset has no marker masks in train / val: upload an artefact patch instead")
    return glyph_from_masks(arrays.images[rows], arrays.marker[rows])


def probe_artefact(model_id: int, artefact: str | bytes | Path = "marker", box: list[int] | None = None,
                   split: str = PROBE_SPLIT, limit: int | None = None, device: str | None = None) -> ArtefactProbe:
    """Artefact injection for one classifier on its dataset's held-out `split` (four corners, or `box`)."""
    from core.probe.artefact import artefact_probe, corner_boxes
    dev = resolve_device(device)
    clf, row = load_classifier(int(model_id), dev)
    arr = load_arrays(int(row["dataset_id"]))
    rows = arr.split_index(split)
    if len(rows) == 0:
        raise ValueError(f"the model's dataset has no {split!r} split to probe")
    rows = rows[:limit] if limit else rows
    if isinstance(artefact, str) and artefact == "marker":
        patch, alpha = marker_glyph(arr)
        label = "marker glyph"
    else:
        if isinstance(artefact, (str, Path)) and not Path(artefact).is_file():
            raise ValueError(f"artefact file {artefact} does not exist")
        patch, alpha = load_patch(artefact)
        label = "uploaded patch" if isinstance(artefact, bytes) else Path(artefact).name
    size = arr.size
    if max(patch.shape) > size * MAX_PATCH_SHARE:
        raise ValueError(f"the artefact ({patch.shape[0]}×{patch.shape[1]}) is larger than half the "
                         f"{size}×{size} image")
    h, w = patch.shape
    boxes = [tuple(int(b) for b in box)] if box else corner_boxes(size, h, w)
    if box and len(box) != 4:
        raise ValueError("box must be four integers r0 c0 r1 c1")
    if box:  # the patch fills the box: resample it to the box size
        patch, alpha = _fit(patch, alpha, box[2] - box[0], box[3] - box[1])
    res = artefact_probe(clf, arr.images[rows], patch, alpha, boxes, device=dev)
    classes = list(arr.classes)
    positions = [{"box": list(p.box), "changed": p.changed, "shift": {c: float(v) for c, v in zip(classes, p.shift)},
                  "toward": classes[p.toward], "changed_other": p.changed_other} for p in res]
    return ArtefactProbe(model_id=int(model_id), split=split, n=len(rows), artefact=label, classes=classes,
                         positions=positions)


def _fit(patch: np.ndarray, alpha: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image as PILImage

    if h <= 0 or w <= 0:
        raise ValueError("box must have r1 > r0 and c1 > c0")
    rs = lambda a: np.asarray(PILImage.fromarray(a.astype(np.float32)).resize((w, h), PILImage.BILINEAR))  # noqa: E731
    return rs(patch), np.clip(rs(alpha), 0, 1)


def change_mass(model_id: int, method: str | None = None) -> ChangeMass:
    """Mean change-mass ratios (marker box, lungs) over the model's stored counterfactuals."""
    from core.probe.change_mass import mean_ratio

    pairs_m, pairs_l, n = [], [], 0
    for r in list_counterfactuals(model_id=int(model_id), method=method, limit=500):
        try:
            a = load_arrays_of(r)
        except FileNotFoundError:
            continue
        n += 1
        if "marker" in a:
            pairs_m.append((a["original"], a["counterfactual"], marker_box(a["marker"])))
        if "lung" in a:
            pairs_l.append((a["original"], a["counterfactual"], a["lung"]))
    return ChangeMass(model_id=int(model_id), n=n, marker_ratio=mean_ratio(pairs_m), lung_ratio=mean_ratio(pairs_l))


def probe_rows(model_ids: list[int], device: str | None = None) -> list[dict]:
    """One row per model for the report: max / mean changed share over the corners and the change-mass ratios."""
    out = []
    for mid in model_ids:
        p = probe_artefact(int(mid), device=device)
        cm = change_mass(int(mid))
        ch = [q["changed"] for q in p.positions]
        out.append({"model_id": int(mid), "n": p.n, "max_changed": max(ch), "mean_changed": float(np.mean(ch)),
                    "positions": p.positions, "cf_n": cm.n, "marker_ratio": cm.marker_ratio,
                    "lung_ratio": cm.lung_ratio})
    return out
