"""DatasetArrays: one dataset at its native resolution as uint8 arrays (the cache that training and explaining read).

The cache is an uncompressed .npz; `load(path, mmap=True)` memory-maps its members in place (no copy), so a
21k-image set at 256 px is paged in by the rows a batch reads, never held in RAM as a whole.
"""
from __future__ import annotations

import mmap
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test", "test_shifted")


@dataclass
class DatasetArrays:
    """Row i of every array is one image; `image_ids` are database ids (or -1 before registration).

    images: uint8 (N, H, W) grayscale; lung / lesion / marker: uint8 {0,1} masks (N, H, W), all-zero where
    unknown (has_lung etc. say which rows have a real mask); labels: int64 (N,); splits: str (N,).
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    classes: list[str]
    image_ids: np.ndarray
    lung: np.ndarray
    lesion: np.ndarray
    marker: np.ndarray
    has_lung: np.ndarray
    has_marker: np.ndarray
    paths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def split_index(self, *splits: str) -> np.ndarray:
        """Row indices of the given splits (all rows when none given)."""
        if not splits:
            return np.arange(len(self))
        return np.flatnonzero(np.isin(self.splits, list(splits)))

    def save(self, path: str | Path) -> None:
        """Atomic write (temp file + rename) of an uncompressed npz."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, images=self.images, labels=self.labels, splits=self.splits.astype(str),
                     classes=np.array(self.classes, dtype=str), image_ids=self.image_ids, lung=self.lung,
                     lesion=self.lesion, marker=self.marker, has_lung=self.has_lung, has_marker=self.has_marker,
                     paths=self.paths.astype(str))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> "DatasetArrays":
        """Read the cache; mmap=True maps the stored members read-only (a compressed member is read whole)."""
        if mmap:
            z = npz_memmap(path)
            return cls(images=z["images"], labels=z["labels"], splits=z["splits"], classes=[str(c) for c in z["classes"]],
                       image_ids=z["image_ids"], lung=z["lung"], lesion=z["lesion"], marker=z["marker"],
                       has_lung=z["has_lung"], has_marker=z["has_marker"], paths=z["paths"])
        with np.load(path, allow_pickle=False) as z:
            return cls(images=z["images"], labels=z["labels"], splits=z["splits"], classes=[str(c) for c in z["classes"]],
                       image_ids=z["image_ids"], lung=z["lung"], lesion=z["lesion"], marker=z["marker"],
                       has_lung=z["has_lung"], has_marker=z["has_marker"], paths=z["paths"])

    def release_pages(self) -> None:
        """Drop this process's mappings of the cache pages read so far (madvise DONTNEED on every memory-mapped
        member; the data stay in the page cache and are read again on demand), for every holder of these arrays at
        once; a no-op for arrays in memory or where madvise is missing."""
        for name in ("images", "lung", "lesion", "marker"):
            mm = getattr(getattr(self, name), "_mmap", None)
            if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)


def npz_memmap(path: str | Path) -> dict[str, np.ndarray]:
    """{member: array} of an .npz, each uncompressed member a read-only np.memmap at its offset in the file."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as m:
                    out[key] = np.lib.format.read_array(m, allow_pickle=False)
                continue
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                raise ValueError(f"{path.name}: member {key} holds objects; refused")
            count = int(np.prod(shape)) if shape else 1
            if count == 0:
                out[key] = np.zeros(shape, dtype)
                continue
            out[key] = np.memmap(path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                 order="F" if fortran else "C")
    return out
