"""Datasets: SynthCXR synthesis, import of real data (covid-radiography, imagefolder, dicom, zip upload), the
per-dataset array cache and lookups. Used by the `data.synth` / `data.import` jobs, the CLI and the pages.

An import decodes and checks every file once; without skip_bad one bad file refuses the whole import and the
database is left unchanged. Re-importing the same tree is idempotent (content hashes). Images stay where they
are; `$EXEMPLAR_HOME/cache/dataset_<id>.npz` holds them at the working resolution and is rebuilt when missing.
A `data.import` job names its source by upload ids (services/platform/uploads.py), never by path, and every layout streams
its rows through one RowSpill writer (docs/architecture.md, Data import).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import func, select

from core.data import layouts, synthcxr
from core.data.arrays import DatasetArrays
from core.data.checks import MAX_PIXELS, BadFile, decode_gray, decode_mask, resize_image, resize_mask, sha256_bytes
from db.models import Dataset, Image, utcnow
from services.jobs.lifecycle import JobCancelled
from services.platform.database import session
from services.platform.settings import from_stored, get_settings, to_stored
from services.team.access import check_use_case

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_FILE_BYTES = 512 << 20
MIN_IMPORT_SIZE, MAX_IMPORT_SIZE = 32, 1024  # the array cache's side: native size, clamped to this range
Progress = Callable[..., None]


class ImportRefused(ValueError):
    """Bad files found and skip_bad was not given: nothing was written. `.report` lists every bad file."""

    def __init__(self, report: dict):
        bad = report["bad"]
        head = "; ".join(f"{b['path']}: {b['reason']}" for b in bad[:5]) + (" …" if len(bad) > 5 else "")
        super().__init__(f"import refused, nothing imported: {len(bad)} bad file(s): {head}. Fix or remove "
                         "them, or import the rest with --skip-bad ('Skip bad files' on the page)")
        self.report = report


# ----------------------------------------------------------------------------------------------- helpers

def _sub(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None
    return lambda f, msg="", **kw: progress(lo + (hi - lo) * float(f), msg, **kw)


def say(progress: Progress | None, f: float, msg: str, committed: bool = False) -> None:
    """Report an import's progress (shared with services.data.dicom_import); once the database is committed a cancel
    request can no longer undo the work, so it is swallowed. Messages never name a server path or a source file
    (docs/architecture.md, Data import)."""
    if progress is None:
        return
    if not committed:
        progress(f, msg)
        return
    try:
        progress(f, msg)
    except JobCancelled:
        pass


def readable_name(name: str) -> bool:
    """Whether a path from the file system is valid UTF-8 (os.walk hands undecodable bytes over as surrogates,
    which no database column can store)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def printable_name(name: str) -> str:
    """A path as one line of valid UTF-8: bytes that are not UTF-8 are written as backslash escapes
    (b"bad\\xff.png" → "bad\\xff.png"), so a report or a refusal can name the file."""
    if readable_name(name):
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


NOT_UTF8 = "file name is not valid UTF-8 (rename the file)"


def split_unreadable(records: list[layouts.Record], bad: list[layouts.Bad]) -> list[layouts.Record]:
    """The records whose paths (image and masks) are valid UTF-8; each other one goes to `bad`, named with its
    bytes escaped (issue 23: one such name used to abort the whole import, --skip-bad included)."""
    keep = []
    for rec in records:
        odd = [n for n in (rec.path, rec.mask, rec.lesion_mask, rec.marker_mask) if n and not readable_name(n)]
        if not odd:
            keep.append(rec)
        elif odd[0] == rec.path:
            bad.append(layouts.Bad(printable_name(rec.path), NOT_UTF8))
        else:
            bad.append(layouts.Bad(printable_name(rec.path), f"mask {printable_name(odd[0])}: {NOT_UTF8}"))
    return keep


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise ValueError(f"dataset name {name!r} must be 1-100 characters of letters, digits, '.', '_' or '-' "
                         "and start with a letter or digit")
    return name


def cache_path(dataset_id: int) -> Path:
    return get_settings().path("cache") / f"dataset_{int(dataset_id)}.npz"


def _dataset_dict(d: Dataset, n_images: int | None = None) -> dict:
    return {"id": d.id, "dataset_id": d.id, "name": d.name, "root": from_stored(d.root), "layout": d.layout,
            "classes": list(d.classes or []), "image_size": d.image_size, "counts": d.counts or {},
            "report": d.report or {}, "meta": d.meta or {}, "n_images": n_images,
            "created_by": d.created_by, "created_at": d.created_at.isoformat() if d.created_at else None}


def _image_dict(im: Image, classes: list[str]) -> dict:
    return {"id": im.id, "dataset_id": im.dataset_id, "path": im.path, "label": im.label,
            "class": classes[im.label] if 0 <= im.label < len(classes) else str(im.label), "split": im.split,
            "index": im.index, "sha256": im.sha256, "width": im.width, "height": im.height,
            "mask_path": im.mask_path, "lesion_mask_path": im.lesion_mask_path,
            "marker_mask_path": im.marker_mask_path, "meta": im.meta or {}}


def _counts(labels, splits, classes: list[str]) -> dict:
    """{class: {split: n}} over SPLITS (every class and split present)."""
    labels, splits = np.asarray(labels), np.asarray(splits)
    return {c: {s: int(((labels == i) & (splits == s)).sum()) for s in layouts.SPLITS} for i, c in enumerate(classes)}


# ----------------------------------------------------------------------------------------------- lookups

def get_dataset(ref: int | str) -> dict:
    """A dataset by id or name (with report, meta and image count); ValueError when there is none."""
    with session() as s:
        d = None
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            d = s.get(Dataset, int(ref))
        if d is None and isinstance(ref, str):
            d = s.scalars(select(Dataset).where(Dataset.name == ref.strip())).first()
        if d is None:
            raise ValueError(f"no dataset {ref!r}")
        n = s.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == d.id))
        return _dataset_dict(d, int(n or 0))


def list_datasets() -> list[dict]:
    with session() as s:
        rows = s.scalars(select(Dataset).order_by(Dataset.id)).all()
        n = dict(s.execute(select(Image.dataset_id, func.count()).group_by(Image.dataset_id)).all())
        return [_dataset_dict(d, int(n.get(d.id, 0))) for d in rows]


def resolve_image(dataset_id: int, ref: int | str) -> dict:
    """An image of the dataset by database id or by dataset-relative path; ValueError when there is none."""
    with session() as s:
        d = s.get(Dataset, int(dataset_id))
        if d is None:
            raise ValueError(f"no dataset {dataset_id}")
        im = None
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            im = s.get(Image, int(ref))
            if im is not None and im.dataset_id != d.id:
                im = None
        if im is None and isinstance(ref, str):
            rel = ref.strip().replace("\\", "/")
            while rel.startswith("./"):
                rel = rel[2:]
            im = s.scalars(select(Image).where(Image.dataset_id == d.id, Image.path == rel)).first()
        if im is None:
            raise ValueError(f"no image {ref!r} in dataset {d.name!r}")
        return _image_dict(im, list(d.classes or []))


def list_images(dataset_id: int, split: str | None = None, limit: int | None = None) -> list[dict]:
    """Image rows of a dataset in cache-row order (optionally one split)."""
    with session() as s:
        d = s.get(Dataset, int(dataset_id))
        if d is None:
            raise ValueError(f"no dataset {dataset_id}")
        q = select(Image).where(Image.dataset_id == d.id).order_by(Image.index)
        if split:
            q = q.where(Image.split == split)
        if limit:
            q = q.limit(limit)
        return [_image_dict(im, list(d.classes or [])) for im in s.scalars(q)]


# ----------------------------------------------------------------------------------------------- decoding

@dataclass
class Item:
    """One decoded image of an import (the PNG / imagefolder path and services.data.dicom_import alike): its record,
    content hash, native size, metadata and, until they go to the import's RowSpill, its pixels at the working
    size. `rec.path` is what the images row stores (a DICOM import's generated name)."""

    rec: layouts.Record
    sha256: str
    width: int
    height: int
    image: np.ndarray            # uint8 (size, size)
    lung: np.ndarray | None      # bool (size, size)
    lesion: np.ndarray | None
    marker: np.ndarray | None
    meta: dict
    masks: tuple[bool, bool, bool] | None = None  # which masks exist, once the pixels went to a RowSpill

    def drop_pixels(self) -> None:
        """Keep only which masks exist: the pixels were written to the import's spill file."""
        self.masks = (self.lung is not None, self.lesion is not None, self.marker is not None)
        self.image = self.lung = self.lesion = self.marker = None

    def has(self, mask: str) -> bool:
        """Whether the item has a `lung`, `lesion` or `marker` mask (also after drop_pixels)."""
        if self.masks is not None:
            return self.masks[("lung", "lesion", "marker").index(mask)]
        return getattr(self, mask) is not None


def _read(root: Path, rel: str) -> bytes:
    p = layouts.safe_relpath(root, rel)
    if p is None:
        raise BadFile("path leads outside the dataset root")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise BadFile(f"cannot read: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise BadFile(f"file is {size:,} bytes (limit {MAX_FILE_BYTES:,})")
    return p.read_bytes()


def _decode(root: Path, rec: layouts.Record, size: int, max_pixels: int, deid=None,
            data: bytes | None = None) -> Item:
    """Decode and check one record (image and masks) → small arrays at the working size; raises BadFile."""
    if rec.kind == "dicom":
        from core.data.dicom import Deidentifier, read_dicom

        p = layouts.safe_relpath(root, rec.path)
        if p is None:
            raise BadFile("path leads outside the dataset root")
        di = read_dicom(p, deid if deid is not None else Deidentifier(), max_pixels, name=rec.path)
        h, w = di.pixels.shape
        return Item(rec, di.sha256, w, h, resize_image(di.pixels, size), None, None, None, di.meta)
    data = _read(root, rec.path) if data is None else data
    full = decode_gray(data, max_pixels)
    h, w = full.shape
    masks = {}
    for kind in ("mask", "lesion_mask", "marker_mask"):
        rel = getattr(rec, kind)
        if rel:
            try:
                masks[kind] = resize_mask(decode_mask(_read(root, rel), (h, w), max_pixels), size)
            except BadFile as exc:
                raise BadFile(f"{kind.replace('_', ' ')} {rel}: {str(exc).removeprefix('mask: ')}") from None
    return Item(rec, sha256_bytes(data), w, h, resize_image(full, size), masks.get("mask"),
                 masks.get("lesion_mask"), masks.get("marker_mask"), {})


def native_size(root: Path, records: list[layouts.Record]) -> int:
    """The cache side for an import at native size: the longer side of the first readable image (its header only),
    clamped to MIN_IMPORT_SIZE..MAX_IMPORT_SIZE; 64 when no image can be read (the import then reports them)."""
    from PIL import Image as PILImage

    for rec in records[:50]:
        p = layouts.safe_relpath(root, rec.path)
        if p is None:
            continue
        try:
            if rec.kind == "dicom":
                import pydicom

                ds = pydicom.dcmread(str(p), stop_before_pixels=True)
                w, h = int(ds.Columns), int(ds.Rows)
            else:
                with PILImage.open(p) as im:
                    w, h = im.size
        except Exception:  # unreadable: the decode pass reports it
            continue
        if w > 0 and h > 0:
            return int(min(MAX_IMPORT_SIZE, max(MIN_IMPORT_SIZE, max(w, h))))
    return 64


def _arrays(items: list[Item], labels: list[int], splits: list[str], ids: list[int], classes: list[str],
            size: int) -> DatasetArrays:
    n = len(items)
    z = lambda: np.zeros((n, size, size), np.uint8)  # noqa: E731
    arr = DatasetArrays(images=z(), labels=np.asarray(labels, np.int64), splits=np.asarray(splits, dtype=str),
                        classes=list(classes), image_ids=np.asarray(ids, np.int64), lung=z(), lesion=z(), marker=z(),
                        has_lung=np.zeros(n, bool), has_marker=np.zeros(n, bool),
                        paths=np.asarray([it.rec.path for it in items], dtype=str))
    for i, it in enumerate(items):
        arr.images[i] = it.image
        if it.lung is not None:
            arr.lung[i], arr.has_lung[i] = it.lung, True
        if it.lesion is not None:
            arr.lesion[i] = it.lesion
        if it.marker is not None:
            arr.marker[i], arr.has_marker[i] = it.marker, True
        # the item's copies go as soon as they are in the cache arrays: an import at native size holds the
        # dataset once, not twice (21k images at 256 px with three masks are ~5.5 GB)
        it.image = it.lung = it.lesion = it.marker = None
    return arr


def _concat(a: DatasetArrays, b: DatasetArrays) -> DatasetArrays:
    cat = np.concatenate
    return DatasetArrays(images=cat([a.images, b.images]), labels=cat([a.labels, b.labels]),
                         splits=cat([a.splits.astype(str), b.splits.astype(str)]), classes=a.classes,
                         image_ids=cat([a.image_ids, b.image_ids]), lung=cat([a.lung, b.lung]),
                         lesion=cat([a.lesion, b.lesion]), marker=cat([a.marker, b.marker]),
                         has_lung=cat([a.has_lung, b.has_lung]), has_marker=cat([a.has_marker, b.has_marker]),
                         paths=cat([a.paths.astype(str), b.paths.astype(str)]))


# ----------------------------------------------------------------------------------------------- array cache

def build_arrays(dataset_id: int, progress: Progress | None = None, mmap: bool = False) -> DatasetArrays:
    """Decode every image of the dataset from its root again and write the cache (the rebuild path), streamed
    through a RowSpill like an import: one decoded image in memory at a time."""
    from core.data.dicom import Deidentifier
    from core.data.spill import RowSpill, save_npz

    with session() as s:
        d = s.get(Dataset, int(dataset_id))
        if d is None:
            raise ValueError(f"no dataset {dataset_id}")
        root, size, classes = Path(from_stored(d.root)), int(d.image_size), list(d.classes or [])
        rows = [(im.id, im.path, im.label, im.split, im.mask_path, im.lesion_mask_path, im.marker_mask_path)
                for im in s.scalars(select(Image).where(Image.dataset_id == d.id).order_by(Image.index))]
    items, deid = [], Deidentifier()
    with RowSpill(get_settings().path("cache"), size) as spill:
        for k, (iid, path, label, split, m, lm, mm) in enumerate(rows):
            kind = "dicom" if path.lower().endswith((".dcm", ".dicom")) else "image"
            rec = layouts.Record(path=path, label=str(label), mask=m, lesion_mask=lm, marker_mask=mm, split=split,
                                 kind=kind)
            try:
                it = _decode(root, rec, size, MAX_PIXELS, deid)
            except BadFile as exc:
                raise ValueError(f"cannot rebuild the cache of dataset {dataset_id}: {path}: {exc}") from None
            spill.put(k, {"images": it.image, "lung": it.lung, "lesion": it.lesion, "marker": it.marker})
            it.drop_pixels()
            items.append(it)
            if progress and k % 200 == 0:
                progress(k / max(1, len(rows)), f"decoding {k}/{len(rows)}")
        small = _small_members(items, [r[0] for r in rows], classes, labels=[r[2] for r in rows])
        save_npz(cache_path(dataset_id), small, spill, len(items))
    return DatasetArrays.load(cache_path(dataset_id), mmap=mmap)


def load_arrays(dataset_id: int, mmap: bool = False) -> DatasetArrays:
    """The dataset at its stored (native) resolution (row i = images.index i), from the cache; rebuilt when
    missing/stale. mmap=True maps the cache read-only instead of reading it (large datasets)."""
    p = cache_path(dataset_id)
    with session() as s:
        n = int(s.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == int(dataset_id))) or 0)
        if s.get(Dataset, int(dataset_id)) is None:
            raise ValueError(f"no dataset {dataset_id}")
    if p.exists():
        try:
            arr = DatasetArrays.load(p, mmap=mmap)
            if len(arr) == n:
                return arr
        except Exception:  # a damaged cache file is rebuilt, not trusted
            pass
    return build_arrays(dataset_id, mmap=mmap)


# ----------------------------------------------------------------------------------------------- import

def _prepare_root(path: Path, name: str, uploaded: bool, bad: list[layouts.Bad]) -> tuple[Path, Path | None]:
    """A folder is used in place; a zip is extracted safely under $EXEMPLAR_HOME/uploads. Returns (root, made)."""
    if path.is_file() and path.suffix.lower() == ".zip":
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        target = get_settings().path("uploads") / f"{name}-{h.hexdigest()[:12]}"
        made = None
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                _, zbad = layouts.extract_zip(path, tmp)
                os.replace(tmp, target)
            finally:
                layouts.remove_tree(tmp)
            made = target
            (target / ".zip_report.json").write_text(json.dumps([b.as_dict() for b in zbad]))
        zbad = [layouts.Bad(**b) for b in json.loads((target / ".zip_report.json").read_text())]
        bad.extend(zbad)
        tops = [p for p in target.iterdir() if p.name not in layouts.IGNORED_DIRS and not p.name.startswith(".")]
        root = tops[0] if len(tops) == 1 and tops[0].is_dir() else target
        if uploaded:
            path.unlink(missing_ok=True)
        return root.resolve(), made
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a folder nor a .zip file")
    return path.resolve(), None


def check_import_source(path: str | Path, layout: str, labels: str | Path | None = None,
                        shown: str | None = None) -> Path:
    """Refuse an import before it is queued: the folder or .zip must exist on the server, a zip must open, hold
    images, fit the limits and the free disk and pass its CRC checks (layouts.check_zip), and the dicom layout needs
    an existing labels CSV. Raises ValueError with one plain line naming the path (or `shown`: an uploaded file's
    own name) and what to do."""
    if layout not in layouts.LAYOUTS:
        raise ValueError(f"layout {layout!r} is unknown: choose one of {', '.join(layouts.LAYOUTS)}")
    p = Path(str(path or "").strip()).expanduser()
    if not str(path or "").strip():
        raise ValueError("no dataset path given: enter a folder or a .zip on the server")
    if not p.exists():
        raise ValueError(f"{p} does not exist on the server: check the path (a dataset folder, or a .zip of one)")
    if p.is_file() and p.suffix.lower() != ".zip":
        raise ValueError(f"{p} is a file but not a .zip: give the dataset folder, or a .zip of it")
    if p.is_file():
        layouts.check_zip(p, shown or str(p), free_bytes=shutil.disk_usage(get_settings().path("uploads")).free)
    if layout == "dicom" and not labels:
        raise ValueError("the dicom layout needs a labels CSV with columns path,label[,split]: fill in Labels CSV")
    if labels and not Path(str(labels)).expanduser().is_file():
        raise ValueError(f"labels CSV {labels} does not exist on the server: check the path")
    return p


def import_folder(path: str | Path, layout: str, name: str, skip_bad: bool = False, labels: str | Path | None = None,
                   size: int | None = None, seed: int = 0, *, user_id: int | None, progress: Progress | None = None,
                   max_pixels: int = MAX_PIXELS, uploaded: bool = False, meta: dict | None = None) -> dict:
    """Import (or re-import, idempotently) a folder tree or zip of PNG / JPEG images (every layout but dicom);
    services.data.importing.import_dataset is the entry point for all layouts. Returns {dataset_id, name, root, counts,
    report, created}; raises ImportRefused (nothing written) when bad files are found and skip_bad is False.

    size None (the default) keeps the images' native size (the first image's longer side, within
    MIN_IMPORT_SIZE..MAX_IMPORT_SIZE); images of another size are resized to it and counted in the report."""
    check_use_case(user_id, "data.import")  # a direct call is checked here; a job was checked when submitted
    name = check_name(name)
    if size is not None:
        size = int(size)
        if not MIN_IMPORT_SIZE <= size <= MAX_IMPORT_SIZE:
            raise ValueError(f"size must be between {MIN_IMPORT_SIZE} and {MAX_IMPORT_SIZE}, got {size}")
    src = Path(path).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"{src} not found")
    started = utcnow()
    bad: list[layouts.Bad] = []
    root, made = _prepare_root(src, name, uploaded, bad)
    try:
        return _import(src, root, layout, name, skip_bad, labels, size, seed, user_id, progress, max_pixels, meta,
                       bad, started)
    except BaseException:
        if made is not None:  # a refused or failed zip import leaves nothing behind
            with session() as s:
                used = s.scalars(select(Dataset).where(Dataset.name == name)).first()
            if used is None:
                layouts.remove_tree(made)
        raise


@dataclass
class ImportScan:
    """What the decode pass found: new items (pixels in `spill`, row = position), changed items (pixels in memory),
    counts of unchanged files and same-content duplicates."""
    new: list
    changed: list
    unchanged: int
    duplicates: list


def _existing(name: str, root: Path, layout: str, size: int | None) -> tuple[int | None, list, dict, int | None]:
    """(id, classes, {path: (image id, sha256, index)}, size) of a dataset being re-imported; (None, [], {}, size)
    for a new name. Refuses a name taken by another root / layout or a different working size."""
    with session() as s:
        existing = s.scalars(select(Dataset).where(Dataset.name == name)).first()
        if existing is None:
            return None, [], {}, size
        if Path(from_stored(existing.root)) != root or existing.layout != layout:
            raise ValueError(f"dataset {name!r} already exists (another source folder, layout "
                             f"{existing.layout}); pick another --name")
        size = int(existing.image_size) if size is None else size
        if int(existing.image_size) != size:
            raise ValueError(f"dataset {name!r} exists at working size {existing.image_size}, not {size}")
        rows = {im.path: (im.id, im.sha256, im.index) for im in
                s.scalars(select(Image).where(Image.dataset_id == existing.id))}
        return existing.id, list(existing.classes or []), rows, size


def _scan_items(root, records, classes, size, max_pixels, deid, attrs, ex_rows, bad, spill, progress) -> ImportScan:
    """Decode and check every record once; a new item's pixels go straight to the spill file (the import holds
    one image at a time), a changed one keeps them in memory for an in-place cache update."""
    known_sha = {v[1]: p for p, v in ex_rows.items()}
    seen_sha: dict[str, str] = {}
    out = ImportScan([], [], 0, [])
    n = len(records)
    for k, rec in enumerate(records):
        if progress and k % 100 == 0:
            progress(0.05 + 0.8 * k / max(1, n), f"checking {k}/{n} files")
        if rec.label not in classes:
            bad.append(layouts.Bad(rec.path, f"class {rec.label!r} is not one of the dataset's classes "
                                             f"({', '.join(classes)})"))
            continue
        try:
            data = None
            if rec.kind != "dicom":
                data = _read(root, rec.path)
                if rec.path in ex_rows and ex_rows[rec.path][1] == sha256_bytes(data):
                    out.unchanged += 1
                    continue
            item = _decode(root, rec, size, max_pixels, deid, data=data)
        except BadFile as exc:
            bad.append(layouts.Bad(rec.path, str(exc)))
            continue
        if rec.path in ex_rows and ex_rows[rec.path][1] == item.sha256:
            out.unchanged += 1
            continue
        dup_of = seen_sha.get(item.sha256) or (known_sha.get(item.sha256) if known_sha.get(item.sha256) != rec.path
                                                else None)
        if dup_of is not None:
            out.duplicates.append({"path": rec.path, "same_as": dup_of})
            continue
        seen_sha[item.sha256] = rec.path
        a = attrs.get(rec.path)
        if a:
            item.meta = {k2: v for k2, v in a.items() if k2 not in ("path", "class", "label", "split")}
        if rec.path in ex_rows:
            out.changed.append((item, ex_rows[rec.path]))
        else:
            spill.put(len(out.new), {"images": item.image, "lung": item.lung, "lesion": item.lesion,
                                     "marker": item.marker})
            item.drop_pixels()
            out.new.append(item)
    return out


def _source_kind(src: Path) -> str:
    """What the import read, in words: the report names no server path (docs/architecture.md, Data import)."""
    return "a .zip" if src.suffix.lower() == ".zip" else "a folder"


def _import_report(src, root, layout, size, native, skip_bad, started, n, scan: ImportScan, bad, sc, classes) -> dict:
    new = scan.new
    return {
        "layout": layout, "source": _source_kind(src), "size": size, "native_size": native,
        "resized": sum((it.width, it.height) != (size, size) for it in new), "skip_bad": bool(skip_bad),
        "started_at": started.isoformat(), "finished_at": utcnow().isoformat(),
        "scanned": n, "imported": len(new), "updated": len(scan.changed), "unchanged": scan.unchanged,
        "duplicates": scan.duplicates, "bad": [b.as_dict() for b in bad], "bad_count": len(bad),
        "ignored": sc.ignored[:200], "ignored_count": len(sc.ignored), "classes": classes,
        "masks": {k: sum(it.has(k) for it in new) for k in ("lung", "lesion", "marker")},
    }


def _assign_splits(new_items: list, classes: list[str], seed: int, report: dict) -> None:
    """Splits from splits.csv / the labels CSV, else stratified and seeded over the new images."""
    lab = np.array([classes.index(it.rec.label) for it in new_items], np.int64)
    missing = [i for i, it in enumerate(new_items) if not it.rec.split]
    if missing:
        auto = layouts.stratified_splits(lab[missing], seed)
        for j, i in enumerate(missing):
            new_items[i].rec.split = str(auto[j])
        report["splits"] = f"stratified and seeded (seed {seed}) for {len(missing)} image(s)"


def _import(src, root, layout, name, skip_bad, labels, size, seed, user_id, progress, max_pixels, meta, bad, started):
    from core.data.dicom import Deidentifier
    from core.data.spill import RowSpill

    ex_id, ex_classes, ex_rows, size = _existing(name, root, layout, size)
    say(progress, 0.02, f"scanning the source folder ({layout})")
    sc = layouts.scan(root, layout, labels_csv=labels)
    bad.extend(layouts.Bad(printable_name(b.path), b.reason) for b in sc.bad)
    scanned = len(sc.records)
    sc.records = split_unreadable(sc.records, bad)
    sc.ignored = [printable_name(x) for x in sc.ignored]
    native = size is None
    if native:
        size = native_size(root, sc.records)
    classes = ex_classes or sc.classes
    attrs = synthcxr.read_attributes(root) if layout == "covid-radiography" else {}
    deid = Deidentifier() if layout == "dicom" else None
    with RowSpill(get_settings().path("cache"), size) as spill:  # deleted on every way out: nothing half-written stays
        scan = _scan_items(root, sc.records, classes, size, max_pixels, deid, attrs, ex_rows, bad, spill, progress)
        report = _import_report(src, root, layout, size, native, skip_bad, started, scanned, scan, bad, sc, classes)
        if deid is not None:
            report["deidentification"] = deid.report()
        if bad and not skip_bad:
            raise ImportRefused(report)
        if ex_id is None and not scan.new:
            raise ValueError(f"no importable images found in the source folder with layout {layout}"
                             + (f" ({len(bad)} bad)" if bad else ""))
        _assign_splits(scan.new, classes, seed, report)
        say(progress, 0.88, f"registering {len(scan.new)} new, {len(scan.changed)} changed image(s)")
        old = load_arrays(ex_id) if ex_id is not None and (scan.new or scan.changed) else None
        dataset_id, counts, ids = register_rows(ex_id, name, root, layout, classes, size, meta, user_id, scan, report)
        if ex_id is None or scan.new or scan.changed:  # an unchanged re-import keeps its cache as it is
            say(progress, 0.95, "writing the array cache", committed=True)
            write_cache(dataset_id, scan, ids, classes, size, old, spill)
    say(progress, 1.0, f"dataset {name}: {len(scan.new)} imported, {scan.unchanged} unchanged, {len(bad)} bad",
         committed=True)
    return {"dataset_id": dataset_id, "name": name, "root": str(root), "counts": counts, "report": report,
            "created": ex_id is None}


def register_rows(ex_id, name, root, layout, classes, size, meta, user_id, scan: ImportScan,
                  report) -> tuple[int, dict, list]:
    """The dataset row (new or existing), one Image row per new item, updated rows for changed ones, the counts
    and the report, in one transaction (shared by every layout, DICOM included); returns (dataset id, counts, new
    image ids in item order)."""
    with session() as s:
        if ex_id is None:
            d = Dataset(name=name, root=to_stored(root), layout=layout, classes=classes, image_size=size,
                        counts={}, report={}, meta=dict(meta or {}), created_by=user_id)
            s.add(d)
            s.flush()
            start = 0
        else:
            d = s.get(Dataset, ex_id)
            start = int(s.scalar(select(func.max(Image.index)).where(Image.dataset_id == d.id)) or -1) + 1
        rows = [Image(dataset_id=d.id, path=it.rec.path, label=classes.index(it.rec.label), split=it.rec.split,
                      sha256=it.sha256, width=it.width, height=it.height, mask_path=it.rec.mask,
                      lesion_mask_path=it.rec.lesion_mask, marker_mask_path=it.rec.marker_mask, meta=it.meta,
                      index=start + i) for i, it in enumerate(scan.new)]
        s.add_all(rows)
        for it, (iid, _, idx) in scan.changed:
            im = s.get(Image, iid)
            im.sha256, im.width, im.height, im.meta = it.sha256, it.width, it.height, it.meta or im.meta
            im.mask_path, im.lesion_mask_path, im.marker_mask_path = it.rec.mask, it.rec.lesion_mask, it.rec.marker_mask
        s.flush()
        all_rows = s.execute(select(Image.label, Image.split).where(Image.dataset_id == d.id)).all()
        d.counts = _counts([r[0] for r in all_rows], [r[1] for r in all_rows], classes)
        report["finished_at"] = utcnow().isoformat()
        d.report = report
        if meta:
            d.meta = {**(d.meta or {}), **meta}
        return d.id, d.counts, [im.id for im in rows]


def _small_members(items: list, ids: list[int], classes: list[str],
                   labels: list[int] | None = None) -> dict[str, np.ndarray]:
    """The cache's per-row and per-dataset arrays of new items (everything but the pixel members); labels are
    the class indices (by default the index of each item's class name)."""
    labels = [classes.index(it.rec.label) for it in items] if labels is None else labels
    return {"labels": np.asarray(labels, np.int64),
            "splits": np.asarray([it.rec.split for it in items], dtype=str),
            "classes": np.asarray(classes, dtype=str), "image_ids": np.asarray(ids, np.int64),
            "has_lung": np.asarray([it.has("lung") for it in items], bool),
            "has_marker": np.asarray([it.has("marker") for it in items], bool),
            "paths": np.asarray([it.rec.path for it in items], dtype=str)}


def write_cache(dataset_id: int, scan: ImportScan, ids: list[int], classes: list[str], size: int,
                 old: DatasetArrays | None, spill) -> None:
    """The array cache after register_rows (every layout, DICOM included: one copy of the array writing). A new
    dataset's cache is streamed from the spill (never whole in memory); a re-import appends the new rows to the
    old cache and replaces the changed rows in place (in memory: an update is the small case)."""
    from core.data.spill import save_npz

    try:
        if old is None:
            save_npz(cache_path(dataset_id), _small_members(scan.new, ids, classes), spill, len(scan.new))
            return
        sm = _small_members(scan.new, ids, classes)
        new = DatasetArrays(images=spill.read("images", len(scan.new)), labels=sm["labels"], splits=sm["splits"],
                            classes=list(classes), image_ids=sm["image_ids"], lung=spill.read("lung", len(scan.new)),
                            lesion=spill.read("lesion", len(scan.new)), marker=spill.read("marker", len(scan.new)),
                            has_lung=sm["has_lung"], has_marker=sm["has_marker"], paths=sm["paths"])
        for it, (iid, _, idx) in scan.changed:
            one = _arrays([it], [classes.index(it.rec.label)], [old.splits[idx]], [iid], classes, size)
            old.images[idx], old.lung[idx], old.lesion[idx], old.marker[idx] = \
                one.images[0], one.lung[0], one.lesion[0], one.marker[0]
            old.has_lung[idx], old.has_marker[idx] = one.has_lung[0], one.has_marker[0]
        (_concat(old, new) if len(new) else old).save(cache_path(dataset_id))
    except OSError:
        cache_path(dataset_id).unlink(missing_ok=True)  # rebuilt on the next load_arrays


# ----------------------------------------------------------------------------------------------- SynthCXR

def synth_dataset(name: str, n: int = 2400, size: int = 64, confounder: float = 0.9, seed: int = 0, *,
                  user_id: int | None, progress: Progress | None = None) -> dict:
    """Write a SynthCXR tree under $EXEMPLAR_HOME/datasets/<name> and register it.

    Idempotent: the same name with the same arguments returns the existing dataset (created False); the same
    name with other arguments is a ValueError. Returns {dataset_id, name, root, counts, created}.
    """
    check_use_case(user_id, "data.synth")  # a direct call is checked here; a job was checked when submitted
    name = check_name(name)
    man = synthcxr.manifest(n, size, confounder, seed)
    synthcxr.check_args(n, size, confounder)
    with session() as s:
        d = s.scalars(select(Dataset).where(Dataset.name == name)).first()
        if d is not None:
            if (d.meta or {}).get("synthcxr") == man:
                return {"dataset_id": d.id, "name": d.name, "root": from_stored(d.root), "counts": d.counts, "created": False}
            old = (d.meta or {}).get("synthcxr")
            what = (f"SynthCXR with n={old['n']} size={old['size']} confounder={old['confounder']} seed={old['seed']}"
                    if old else f"an imported {d.layout} dataset")
            raise ValueError(f"dataset {name!r} already exists as {what}; pick another --name")
    root = get_settings().path("datasets") / name
    on_disk = root / "synthcxr.json"
    if root.exists() and any(root.iterdir()):
        if not on_disk.exists() or json.loads(on_disk.read_text()) != man:
            raise ValueError(f"folder {root} exists and holds something else; remove it or pick another --name")
        say(progress, 0.6, f"reusing the SynthCXR tree at {root}")
    else:
        tmp = root.with_name(f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            synthcxr.write_tree(tmp, n, size, confounder, seed, progress=_sub(progress, 0.0, 0.6))
            if root.exists():
                root.rmdir()
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    res = import_folder(root, "covid-radiography", name, skip_bad=False, size=size, seed=seed, user_id=user_id,
                         progress=_sub(progress, 0.6, 1.0), meta={"source": "synthcxr", "synthcxr": man})
    return {k: res[k] for k in ("dataset_id", "name", "root", "counts", "created")}


# ----------------------------------------------------------------------------------------------- jobs

def synth_job(ctx) -> dict:
    """`data.synth` job: params name, n, size, confounder, seed."""
    p = ctx.params
    return synth_dataset(p["name"], int(p.get("n", 2400)), int(p.get("size", 64)), float(p.get("confounder", 0.9)),
                         int(p.get("seed", 0)), user_id=ctx.user_id, progress=ctx.progress)


