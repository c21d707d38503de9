"""core.data.spill: rows written one at a time to raw files, streamed into an .npz that DatasetArrays reads (in
memory or memory-mapped) exactly as the one DatasetArrays.save writes."""
from __future__ import annotations

import numpy as np

from core.data.arrays import DatasetArrays
from core.data.spill import RowSpill, save_npz


def test_spilled_rows_round_trip_through_the_cache_format(tmp_path, monkeypatch):
    monkeypatch.setattr("core.data.spill.CHUNK", 1000)  # several chunks a member, one ending mid-row
    rng = np.random.default_rng(0)
    n, side = 7, 24
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    lung = (rng.random((n, side, side)) > 0.5).astype(np.uint8)
    with RowSpill(tmp_path / "cache", side) as spill:
        for i in range(n):
            spill.put(i, {"images": images[i], "lung": lung[i] if i % 2 == 0 else None})  # odd rows: no lung mask
        small = {"labels": np.arange(n, dtype=np.int64), "splits": np.array(["train"] * n), "classes": np.array(["a"]),
                 "image_ids": np.arange(n, dtype=np.int64) + 10, "has_lung": np.arange(n) % 2 == 0,
                 "has_marker": np.zeros(n, bool), "paths": np.array([f"p{i}.png" for i in range(n)])}
        save_npz(tmp_path / "cache" / "d.npz", small, spill, n)
        folder = spill.dir
    assert not folder.exists()  # the spill folder is deleted on close
    want_lung = lung.copy()
    want_lung[1::2] = 0
    for mmap in (False, True):
        arr = DatasetArrays.load(tmp_path / "cache" / "d.npz", mmap=mmap)
        assert np.array_equal(arr.images, images) and np.array_equal(arr.lung, want_lung)
        assert not arr.marker.any() and arr.lesion.shape == (n, side, side)
        assert list(arr.image_ids) == list(range(10, 10 + n)) and arr.paths[3] == "p3.png"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["d.npz"]  # no temp file left


def test_a_row_of_the_wrong_size_is_refused(tmp_path):
    with RowSpill(tmp_path, 8) as spill:
        try:
            spill.put(0, {"images": np.zeros((4, 4), np.uint8)})
        except ValueError as exc:
            assert "64" in str(exc)
        else:
            raise AssertionError("a 4×4 row went into an 8×8 spill")
