"""A second shortcut for the evidence bench (bench/exbl_effect.py --shortcut bar): SynthCXR anatomy and lesions,
but the class is leaked by a bright band along the top edge instead of a corner glyph.

The glyph markers are drawn at uniformly random corners (confounder 0.25 over 4 corners: they carry no class
information). The band sits in one of four quarters of the top edge: the class's quarter with probability p in
train / val / test, a uniformly random quarter in test_shifted. The band's mask replaces the marker mask (WR then
measures the band), the lung masks stay. Written in the COVID-19 Radiography layout with splits.csv, so
`exemplar data import --layout covid-radiography` (services.data.importing.import_dataset) reads it as any user's data.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.synthcxr import CLASSES, write_tree

BAND_ROWS = (1, 4)  # the band's rows (top edge), as a fraction-free pixel range at 64 px; scaled with the size
BRIGHTNESS = 235


def _band(size: int, quarter: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    r0, r1 = (max(1, round(r * size / 64)) for r in BAND_ROWS)
    w = size // 4
    m[r0:r1, quarter * w + w // 8: (quarter + 1) * w - w // 8] = 1
    return m


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_bar_tree(root: str | Path, n: int = 2400, size: int = 64, p: float = 0.9, seed: int = 0) -> dict:
    """Write the dataset under root; returns {'root', 'counts': {split: n}, 'p'}."""
    root = Path(root)
    write_tree(root, n=n, size=size, confounder=0.25, seed=seed)
    for f in ("attributes.csv", "synthcxr.json"):  # they describe the glyph, which is no longer the shortcut
        (root / f).unlink(missing_ok=True)
    rng = np.random.default_rng([seed, 0xBA4D])
    with open(root / "splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict = {}
    for r in rows:
        cls_dir, name = r["path"].split("/images/")
        label = CLASSES.index(cls_dir)
        shifted = r["split"] == "test_shifted"
        quarter = int(rng.integers(0, 4)) if shifted or rng.random() >= p else label
        band = _band(size, quarter)
        img = np.asarray(Image.open(root / r["path"]).convert("L")).copy()
        img[band > 0] = BRIGHTNESS
        (root / r["path"]).write_bytes(_png(img))
        (root / cls_dir / "marker_masks" / name).write_bytes(_png(band * 255))
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    return {"root": str(root), "counts": counts, "p": p}
