"""RowSpill: an import's decoded pixel rows written to disk as they are decoded, then streamed into the array cache.

An import at native size used to hold every decoded image and mask in memory until the cache was written (about
11 GB for 21,165 images at 256 px with three masks). Rows now go to one raw file per member (positioned writes, no
memory map), and `save_npz` writes the cache's uncompressed .npz member by member, copying those files in 16 MiB
chunks: the import holds one image at a time. The .npz is the same format DatasetArrays.save writes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MEMBERS = ("images", "lung", "lesion", "marker")
CHUNK = 16 << 20


class RowSpill:
    """Raw uint8 (side, side) rows per member in a private temporary folder; close() deletes it."""

    def __init__(self, directory: str | Path, side: int):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="import-rows-", dir=directory))
        self.side = int(side)
        self.fds = {m: os.open(self.dir / f"{m}.raw", os.O_RDWR | os.O_CREAT, 0o600) for m in MEMBERS}

    @property
    def row_bytes(self) -> int:
        return self.side * self.side

    def put(self, row: int, pixels: dict[str, np.ndarray | None]) -> None:
        """Write row `row` of each member (a missing mask is left as zeros: a sparse hole in its file)."""
        for m in MEMBERS:
            a = pixels.get(m)
            if a is not None:
                buf = np.ascontiguousarray(a, dtype=np.uint8).reshape(-1)
                if buf.size != self.row_bytes:
                    raise ValueError(f"{m} row {row}: {buf.size} pixels, expected {self.row_bytes}")
                os.pwrite(self.fds[m], buf.tobytes(), row * self.row_bytes)

    def read(self, member: str, count: int) -> np.ndarray:
        """The first `count` rows of a member in memory (for the small re-import path)."""
        out = np.zeros((count, self.side, self.side), np.uint8)
        data = os.pread(self.fds[member], count * self.row_bytes, 0)
        out.reshape(-1)[:len(data)] = np.frombuffer(data, np.uint8)
        return out

    def chunks(self, member: str, count: int):
        """The first `count` rows of a member as byte chunks of at most CHUNK (zeros past the file's end)."""
        total, off = count * self.row_bytes, 0
        while off < total:
            n = min(CHUNK, total - off)
            data = os.pread(self.fds[member], n, off)
            yield data + bytes(n - len(data))
            off += n

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RowSpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_npz(path: str | Path, small: dict[str, np.ndarray], spill: RowSpill, count: int) -> None:
    """Atomic write (temp file + rename) of an uncompressed .npz: the `small` arrays as they are and the spill's
    members as (count, side, side) uint8, streamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in small.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
            for m in MEMBERS:
                with zf.open(f"{m}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.uint8).str, "fortran_order": False,
                                                             "shape": (int(count), spill.side, spill.side)})
                    for chunk in spill.chunks(m, count):
                        f.write(chunk)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
