"""Decode-and-check for imported images and masks: every file is decoded once, bad ones get a reason.

A bad file raises BadFile(reason); the importer lists it in its report. Reasons are plain words for people (no
exception class names, no object reprs): the importer puts the file's path in front of them. Checks: empty file, not an image
(e.g. text named .png), decompression bomb (pixel count from the header, before decoding), truncated or corrupt
data, zero-size image, mask whose shape does not match its image.
"""
from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = False
MAX_PIXELS = 50_000_000  # ~7000×7000: above any real radiograph, far below what a bomb claims
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FORMATS = {"PNG", "JPEG", "BMP", "TIFF", "MPO"}
ASPECT_TOL = 0.02


class BadFile(Exception):
    """A file that cannot be imported; str(exc) is the reason shown in the import report."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Grayscale array of any integer/float dtype → uint8 (integers by their full type range, floats min-max)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        hi = int(a.max()) if a.size else 0
        top = 255 if hi <= 255 and info.min >= 0 else (65535 if hi <= 65535 and info.min >= 0 else info.max)
        lo = 0 if info.min >= 0 else info.min
        return np.clip(np.round((a.astype(np.float64) - lo) / (top - lo) * 255), 0, 255).astype(np.uint8)
    a = a.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.round((a - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if len(data) == 0:
        raise BadFile("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadFile(f"decompression bomb: the header claims more than {max_pixels:,} pixels") from None
    except Exception:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError… for junk; its text names no file
        raise BadFile("not a readable image (not a PNG, JPEG, BMP or TIFF, or damaged)") from None
    if im.format not in FORMATS:
        raise BadFile(f"unsupported image format {im.format}")
    w, h = im.size
    if w <= 0 or h <= 0:
        raise BadFile(f"zero-size image ({w}×{h})")
    if w * h > max_pixels:
        raise BadFile(f"decompression bomb: header claims {w}×{h} = {w * h:,} pixels (limit {max_pixels:,})")
    return im


def decode_gray(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of a PNG/JPEG/BMP/TIFF → uint8 grayscale (H, W); raises BadFile with a reason."""
    im = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadFile(f"decompression bomb: the header claims more than {max_pixels:,} pixels") from None
    except Exception:  # truncated streams raise OSError, broken chunks SyntaxError/ValueError
        raise BadFile("truncated or corrupt image data (the file ends early or is damaged)") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        if im.mode.startswith("I;16"):
            a = a.astype(np.uint16)
        return to_uint8(a)
    if im.mode != "L":
        im = im.convert("L")
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim != 2 or a.size == 0:
        raise BadFile(f"zero-size image ({a.shape})")
    return a


def decode_mask(data: bytes, image_shape: tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask file → bool (H, W) of the image's shape (nearest-neighbour resize; same aspect ratio required)."""
    try:
        m = decode_gray(data, max_pixels)
    except BadFile as exc:
        raise BadFile(f"mask: {exc}") from None
    mh, mw = m.shape
    ih, iw = image_shape
    if abs(mw / mh - iw / ih) > ASPECT_TOL * (iw / ih):
        raise BadFile(f"mask shape {mw}×{mh} does not match image {iw}×{ih} (aspect ratio)")
    b = m > 127
    if (mh, mw) != (ih, iw):
        b = resize_mask(b, (ih, iw))
    return b


def resize_image(a: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) → (size, size): area-averaging when shrinking, bilinear when growing."""
    if a.shape == (size, size):
        return a
    shrink = a.shape[0] > size or a.shape[1] > size
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BOX if shrink else Image.BILINEAR), np.uint8)


def resize_mask(m: np.ndarray, shape: tuple[int, int] | int) -> np.ndarray:
    """bool/uint8 (H, W) → bool of `shape` (an int means square), nearest neighbour."""
    if isinstance(shape, int):
        shape = (shape, shape)
    if m.shape == tuple(shape):
        return m.astype(bool)
    im = Image.fromarray((m > 0).astype(np.uint8) * 255)
    return np.asarray(im.resize((shape[1], shape[0]), Image.NEAREST)) > 127
