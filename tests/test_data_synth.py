"""SynthCXR generator: determinism, layout, mask sanity, the confounder rate and a visible, varying marker."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from core.data import synthcxr
from tests.helpers_data import small_tree


@pytest.fixture(scope="module")
def data():
    return synthcxr.generate(n=800, size=64, confounder=0.9, seed=3)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_args_give_byte_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    small_tree(a, n=48, size=32, seed=7)
    small_tree(b, n=48, size=32, seed=7)
    fa, fb = _files(a), _files(b)
    assert len([k for k in fa if "/images/" in k]) == 48
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    c = tmp_path / "c"
    small_tree(c, n=48, size=32, seed=8)
    assert _files(c)["splits.csv"] != fa["splits.csv"] or any(_files(c)[k] != fa[k] for k in fa if k.endswith(".png"))


def test_tree_matches_arrays_and_layout(tmp_path):
    root = tmp_path / "t"
    man = synthcxr.write_tree(root, n=40, size=48, confounder=0.9, seed=1)
    d = synthcxr.generate(n=40, size=48, confounder=0.9, seed=1)
    with open(root / "splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == synthcxr.relpaths(d.labels)
    assert {r["split"] for r in rows} == set(synthcxr.SPLITS)
    for i in (0, 7, 39):
        rel = rows[i]["path"]
        cls, name = rel.split("/images/")
        assert name.startswith(cls + "-") and cls == synthcxr.CLASSES[d.labels[i]]
        assert np.array_equal(np.asarray(Image.open(root / rel)), d.images[i])
        assert np.array_equal(np.asarray(Image.open(root / cls / "masks" / name)) > 127, d.lung[i] > 0)
        assert np.array_equal(np.asarray(Image.open(root / cls / "lesion_masks" / name)) > 127, d.lesion[i] > 0)
        assert np.array_equal(np.asarray(Image.open(root / cls / "marker_masks" / name)) > 127, d.marker[i] > 0)
    attrs = synthcxr.read_attributes(root)
    assert len(attrs) == 40 and {"marker_corner", "lesion_type", "marker_in_class_corner"} <= set(attrs[rows[0]["path"]])
    assert sum(sum(v.values()) for v in man["counts"].values()) == 40


def test_splits_are_stratified(data):
    for s in synthcxr.SPLITS:
        per_class = [int(((data.labels == c) & (data.splits == s)).sum()) for c in range(4)]
        assert max(per_class) - min(per_class) <= 1, (s, per_class)
    assert (data.splits == "train").mean() == pytest.approx(0.6, abs=0.02)
    assert (data.splits == "test_shifted").mean() == pytest.approx(0.15, abs=0.02)


def test_lung_masks_are_plausible(data):
    area = data.lung.reshape(len(data), -1).mean(1)
    assert area.min() > 0.10 and area.max() < 0.35
    h = data.lung.shape[-1]
    left, right = data.lung[:, :, : h // 2].sum((1, 2)), data.lung[:, :, h // 2:].sum((1, 2))
    assert (left > 0).all() and (right > 0).all()  # two lung fields
    # lungs are darker than the body around them
    inside = (data.images * data.lung).sum((1, 2)) / data.lung.sum((1, 2))
    centre = data.images[:, int(0.85 * h), h // 2 - 4: h // 2 + 4].mean(1)
    assert (inside < centre).mean() > 0.95


def test_lesions_inside_lungs_and_per_class(data):
    assert not (data.lesion & (1 - data.lung)).any()
    area = data.lesion.reshape(len(data), -1).sum(1)
    normal = data.labels == 2
    assert (area[normal] == 0).all()
    assert (area[~normal] >= 4).mean() > 0.97
    # lesions are clearly visible: brighter than the rest of the lung in the same image
    sick = np.flatnonzero(~normal)
    les_mean = np.array([data.images[i][data.lesion[i] > 0].mean() for i in sick])
    lung_mean = np.array([data.images[i][(data.lung[i] > 0) & (data.lesion[i] == 0)].mean() for i in sick])
    assert np.median(les_mean - lung_mean) > 15


def _corner_of(mask: np.ndarray) -> int:
    ys, xs = np.nonzero(mask)
    h = mask.shape[0]
    return int(ys.mean() >= h / 2) * 2 + int(xs.mean() >= h / 2)


def test_marker_in_class_corner_at_rate_p(data):
    corners = np.array([_corner_of(m) for m in data.marker])
    named = np.array([synthcxr.CORNERS.index(a["marker_corner"]) for a in data.attributes])
    assert (corners == named).all()
    own = corners == np.array([synthcxr.CLASS_CORNER[int(c)] for c in data.labels])
    for s in ("train", "val", "test"):
        assert own[data.splits == s].mean() == pytest.approx(0.9, abs=0.06), s
    assert own[data.splits == "test_shifted"].mean() == pytest.approx(0.25, abs=0.1)
    box = synthcxr.corner_boxes(64)
    assert not (data.marker.astype(bool) & ~box).any()  # always inside the corner squares
    lung = data.lung.astype(bool)
    assert (lung & box).sum() / lung.sum() < 0.01  # blanking the corners keeps the lungs
    assert (data.marker.astype(bool) & lung).any(axis=(1, 2)).mean() < 0.01  # the marker stays off the lungs


def test_marker_is_a_varying_glyph_not_a_block(data):
    area = data.marker.reshape(len(data), -1).sum(1)
    assert area.min() >= 6 and area.std() > 3  # size varies
    peak = np.array([data.images[i][data.marker[i] > 0].max() for i in range(50)])
    assert peak.std() > 5  # brightness varies
    for i in range(20):  # never a flat, saturated block: values inside the marker mask vary
        vals = data.images[i][data.marker[i] > 0]
        assert vals.std() > 10 and (vals == 255).mean() < 0.5
    ys, xs = np.nonzero(data.marker[0])
    assert data.marker[0].sum() < 0.8 * (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a glyph, not its bounding box
    assert {a["marker_letter"] for a in data.attributes} == {"L", "R"}


def test_confounder_zero_and_one():
    d1 = synthcxr.generate(n=160, size=32, confounder=1.0, seed=0)
    own = np.array([synthcxr.CORNERS.index(a["marker_corner"]) == synthcxr.CLASS_CORNER[a["label"]]
                    for a in d1.attributes])
    assert own[d1.splits != "test_shifted"].all()
    d0 = synthcxr.generate(n=160, size=32, confounder=0.0, seed=0)
    own0 = np.array([a["marker_in_class_corner"] for a in d0.attributes])
    assert not own0[d0.splits != "test_shifted"].any()


@pytest.mark.parametrize("size", [32, 100, 256])
def test_sizes(size):
    d = synthcxr.generate(n=16, size=size, seed=0)
    assert d.images.shape == (16, size, size) and d.images.dtype == np.uint8
    assert d.lung.sum() > 0 and d.marker.sum() > 0


@pytest.mark.parametrize("kw", [dict(size=16), dict(size=600), dict(n=5), dict(confounder=1.5)])
def test_bad_args(kw):
    with pytest.raises(ValueError):
        synthcxr.generate(**{"n": 64, "size": 64, **kw})


def test_write_tree_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("x")
    with pytest.raises(FileExistsError):
        synthcxr.write_tree(tmp_path / "x", n=16, size=32)
