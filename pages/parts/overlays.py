"""Explanation overlays for the gallery: the image with its map blended in a colormap, rendered with numpy/PIL
for a whole page at once and cached as encoded PNGs per (run, page, opacity, colormap); one colour bar per colormap."""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import streamlit as st
from PIL import Image

from services.data.datasets import cache_path, load_arrays
from services.explanations.explaining import open_maps
from services.platform.settings import get_settings

COLORMAPS = ("jet", "inferno", "viridis", "hot", "gray")


# Colormaps as control points (position, r, g, b), interpolated linearly to 256 entries: hot and gray are
# exact (jet too, below, per channel); viridis and inferno are sampled from matplotlib's tables at 9 points (no matplotlib import needed).
_POINTS: dict[str, list[tuple[float, int, int, int]]] = {
    "inferno": [(0.0, 0, 0, 4), (0.125, 31, 12, 72), (0.25, 85, 15, 109), (0.375, 136, 34, 106),
                (0.5, 186, 54, 85), (0.625, 227, 89, 51), (0.75, 249, 140, 10), (0.875, 249, 201, 50),
                (1.0, 252, 255, 164)],
    "viridis": [(0.0, 68, 1, 84), (0.125, 71, 44, 122), (0.25, 59, 81, 139), (0.375, 44, 113, 142),
                (0.5, 33, 145, 140), (0.625, 39, 173, 129), (0.75, 92, 200, 99), (0.875, 170, 220, 50),
                (1.0, 253, 231, 37)],
    "hot": [(0.0, 10, 0, 0), (0.365, 255, 0, 0), (0.746, 255, 255, 0), (1.0, 255, 255, 255)],
    "gray": [(0.0, 0, 0, 0), (1.0, 255, 255, 255)],
}


# jet per channel (matplotlib's segment data): channel → [(position, value 0..1), …]
_JET = {"r": [(0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)],
        "g": [(0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)],
        "b": [(0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)]}


@lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a colormap."""
    t = np.linspace(0, 1, 256)
    if name == "jet":
        return np.stack([np.interp(t, *zip(*_JET[c])) * 255 for c in "rgb"], 1).round().astype(np.uint8)
    if name not in _POINTS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    pts = np.array(_POINTS[name], np.float64)
    return np.stack([np.interp(t, pts[:, 0], pts[:, c]) for c in (1, 2, 3)], 1).round().astype(np.uint8)


def blend(gray: np.ndarray, maps: np.ndarray, opacity: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """gray (k, H, W) uint8 and maps (k, H, W) in [0, 1] (NaN → 0) → (k, H, W, 3) uint8 overlays."""
    m = np.nan_to_num(np.asarray(maps, np.float32), nan=0.0).clip(0, 1)
    col = colormap_lut(cmap)[(m * 255).round().astype(np.uint8)].astype(np.float32)
    g = np.asarray(gray, np.float32)[..., None]
    return ((1 - opacity) * g + opacity * col).round().clip(0, 255).astype(np.uint8)


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=-1)


def mask_rgb(gray: np.ndarray, mask: np.ndarray, color=(0, 200, 255), opacity: float = 0.5) -> np.ndarray:
    """The image with a binary mask tinted in `color`."""
    g = gray_rgb(gray).astype(np.float32)
    c = np.array(color, np.float32)
    m = np.asarray(mask, bool)[..., None]
    return np.where(m, (1 - opacity) * g + opacity * c, g).round().astype(np.uint8)


def side_by_side(panels: list[np.ndarray], side: int, gap: int = 8) -> bytes:
    """RGB panels, each resized to side × side, in one row with a white gap, as one PNG (one element on screen)."""
    row = [np.asarray(Image.fromarray(p).resize((side, side), Image.Resampling.BILINEAR)) for p in panels]
    white = np.full((side, gap, 3), 255, np.uint8)
    parts = [x for p in row for x in (p, white)][:-1]
    return png(np.concatenate(parts, axis=1))


def png(rgb: np.ndarray, side: int | None = None) -> bytes:
    im = Image.fromarray(rgb)
    if side and im.width != side:
        im = im.resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """A thumbnail as JPEG: encodes ~6× faster than PNG and is smaller; the viewer shows the full-size PNG."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@lru_cache(maxsize=16)
def colorbar_png(cmap: str, width: int = 220, height: int = 12) -> bytes:
    """A horizontal colour bar of the colormap (left = 0, right = 1), for the caption under map images."""
    lut = colormap_lut(cmap)[np.linspace(0, 255, width).round().astype(int)]
    return png(np.repeat(lut[None], height, axis=0))


def cache_stamp(dataset_id: int) -> float:
    """The dataset cache file's modification time: part of every cache key of what is drawn from it."""
    p = cache_path(dataset_id)
    return p.stat().st_mtime if p.exists() else 0.0


@st.cache_resource(max_entries=16, show_spinner=False)
def _array(dataset_id: int, stamp: float, home: str, key: str) -> np.ndarray:
    """One array of the dataset's cache file (images, lung, marker, has_lung, …): an npz member is read alone."""
    p = cache_path(dataset_id)
    if not p.exists():
        load_arrays(dataset_id)  # rebuilds the cache from the dataset's files
    from core.data.arrays import npz_memmap  # issue 17: mapped in place, not read whole (21k images at 256 px)

    return npz_memmap(p)[key]


def dataset_array(dataset_id: int, key: str) -> np.ndarray:
    """An array of the dataset cache, loaded once per server process (again when the cache file changes)."""
    return _array(int(dataset_id), cache_stamp(dataset_id), str(get_settings().home_dir), key)


@st.cache_resource(max_entries=8, show_spinner=False)
def maps_file(maps_path: str):
    """The maps file of a run, opened once per server process."""
    return open_maps(maps_path)


def run_maps(run: dict) -> np.ndarray:
    """A run's maps, memory-mapped (only the rows a page shows are read)."""
    return maps_file(run["maps_path"])


@st.cache_data(max_entries=64, show_spinner=False)
def page_overlays(run_id: int, maps_path: str, dataset_id: int, stamp: float, pairs: tuple[tuple[int, int], ...],
                  opacity: float, cmap: str, side: int = 160) -> list[bytes]:
    """PNG overlays for one page: pairs = ((map row, dataset cache row), …); cached by run, page and style."""
    if not pairs:
        return []

    images = _array(int(dataset_id), stamp, str(get_settings().home_dir), "images")
    maps = maps_file(maps_path)
    mi = np.array([p[0] for p in pairs])
    ii = np.array([p[1] for p in pairs])
    gray = images[ii]
    if side and gray.shape[-1] != side:  # blend at the thumbnail's size, the page's images in one batched resize
        from core.maps import resize_bilinear

        gray = resize_bilinear(gray, side).round().clip(0, 255).astype(np.uint8)
    rgb = blend(gray, maps.at(mi, gray.shape[-2:]), opacity, cmap)
    return [jpeg(x) for x in rgb]


def overlays_for(run: dict, dataset_id: int, rows: list[dict], opacity: float, cmap: str, side: int = 160) -> list[bytes]:
    pairs = tuple((int(r["index"]), int(r["image_index"])) for r in rows)
    return page_overlays(int(run["id"]), run["maps_path"], int(dataset_id), cache_stamp(dataset_id), pairs,
                         float(opacity), cmap, side)
