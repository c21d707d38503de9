"""DICOM import without PHI: pixels are de-identified in memory and stored under generated names
(`<pseudonym>/<study>/<n>.png` under $EXEMPLAR_HOME/datasets/<name>); original file and folder names and tags
are never stored, reported, cached or exported (bad files are named by their number in sorted path order).

Pseudonyms and replacement UIDs are keyed hashes (a per-installation key in $EXEMPLAR_HOME/secrets), so a
re-import maps the same patient to the same pseudonym. The map back to the originals is written only when asked,
to a file outside EXEMPLAR_HOME. Images flagged BurnedInAnnotation = YES are refused unless allowed.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from core.data import layouts
from core.data.checks import MAX_PIXELS, BadFile, resize_image
from core.data.grouping import grouped_splits
from db.models import Dataset, Image, utcnow
from services.database import session
from services.settings import get_settings, to_stored

BURNED_IN = ("burned-in annotation (BurnedInAnnotation = YES): the pixels may show identifiers; "
             "use --allow-burned-in to import such images, or --skip-bad to import the rest")


@dataclass
class _Dicom:
    number: int  # 1-based, in sorted path order
    original: str  # relative original path: kept in memory (and in the pseudonym map on request) only
    label: str
    split: str | None
    pixels: np.ndarray
    meta: dict
    sha256: str
    patient_id: str | None
    stored: str = ""


def pseudonym_key() -> bytes:
    """The installation's pseudonymisation key (created once, mode 0600); never exported."""
    p = get_settings().path("secrets") / "pseudonym.key"
    if not p.exists():
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        try:
            os.link(tmp, p)  # the first writer wins; a concurrent import reads the same key
        except FileExistsError:
            pass
        tmp.unlink(missing_ok=True)
    return p.read_bytes()


def scrub(text: str, rel: str, root: Path) -> str:
    """Text with the file's absolute path, relative path and every path component of it replaced by '…'."""
    parts = sorted({str(root / rel), rel, *[q for q in Path(rel).parts if len(q) >= 2]}, key=len, reverse=True)
    for q in parts:
        text = text.replace(q, "…")
    return text


def _check_map_target(pseudonym_map: str | Path | None) -> Path | None:
    if not pseudonym_map:
        return None
    target = Path(pseudonym_map).expanduser().resolve()
    home = get_settings().home_dir
    if target == home or home in target.parents:
        raise ValueError("the pseudonym map must be written outside EXEMPLAR_HOME (it links pseudonyms to "
                         "patients and must never travel with exports)")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder for the pseudonym map {target.parent} not found")
    return target


def _scan(root: Path, labels, progress, deid, allow_burned_in: bool, max_pixels: int, classes: list[str]):
    """Decode every DICOM; returns (items, bad, counts) with bad files named by number only."""
    from core.data.dicom import read_dicom

    sc = layouts.scan(root, "dicom", labels_csv=labels)
    numbers = {p: i + 1 for i, p in enumerate(sorted({r.path for r in sc.records} | {b.path for b in sc.bad}))}
    bad = [{"path": f"file #{numbers[b.path]}", "reason": scrub(b.reason, b.path, root)} for b in sc.bad]
    items: list[_Dicom] = []
    burned = {"found": 0, "refused": 0, "imported": 0}
    classes = classes or sc.classes
    for k, rec in enumerate(sc.records):
        if progress and k % 50 == 0:
            progress(0.05 + 0.75 * k / max(1, len(sc.records)), f"reading DICOM {k}/{len(sc.records)}")
        no = numbers[rec.path]
        if rec.label not in classes:
            bad.append({"path": f"file #{no}", "reason": f"class {rec.label!r} is not one of {', '.join(classes)}"})
            continue
        try:
            di = read_dicom(root / rec.path, deid, max_pixels)
        except BadFile as exc:
            bad.append({"path": f"file #{no}", "reason": scrub(str(exc), rec.path, root)})
            continue
        if di.burned_in:
            burned["found"] += 1
            if not allow_burned_in:
                burned["refused"] += 1
                bad.append({"path": f"file #{no}", "reason": BURNED_IN})
                continue
            burned["imported"] += 1
        pid = next((o for o, p in deid.patient_map.items() if p == di.meta.get("patient")), None)
        items.append(_Dicom(no, rec.path, rec.label, rec.split, di.pixels, di.meta, di.sha256, pid))
    return items, bad, burned, classes, len(sc.records), len(sc.ignored)


def _assign_names(items: list[_Dicom], root: Path) -> None:
    """<pseudonym>/<study>/<n>.png, n counting on from what the folder already holds."""
    nxt: dict[str, int] = {}
    for it in items:
        study = "S" + hashlib.sha256(str(it.meta.get("StudyInstanceUID", "none")).encode()).hexdigest()[:8]
        folder = f"{it.meta.get('patient') or 'unknown'}/{study}"
        if folder not in nxt:
            have = [int(m.group(1)) for f in (root / folder).glob("*.png") if (m := re.fullmatch(r"(\d+)\.png", f.name))]
            nxt[folder] = max(have, default=0) + 1
        it.stored, nxt[folder] = f"{folder}/{nxt[folder]}.png", nxt[folder] + 1


def _write_pngs(items: list[_Dicom], root: Path) -> list[Path]:
    from PIL import Image as PILImage

    written = []
    for it in items:
        p = root / it.stored
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        PILImage.fromarray(it.pixels).save(tmp, format="PNG")
        os.replace(tmp, p)
        written.append(p)
    return written


def _write_map(target: Path, items: list[_Dicom]) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pseudonym", "patient_id", "original_path", "stored_path"])
        for it in items:
            w.writerow([it.meta.get("patient") or "", it.patient_id or "", it.original, it.stored])


def _splits(items: list[_Dicom], classes: list[str], seed: int) -> str:
    missing = [i for i, it in enumerate(items) if not it.split]
    if not missing:
        return "from the labels CSV"
    lab = np.array([classes.index(items[i].label) for i in missing], np.int64)
    groups = [items[i].meta.get("patient") for i in missing]
    auto = grouped_splits(lab, groups, seed)
    for j, i in enumerate(missing):
        items[i].split = str(auto[j])
    n_pat = len({g for g in groups if g})
    return f"grouped by patient pseudonym ({n_pat} patient(s)), stratified and seeded (seed {seed})"


def _source_root(src: Path, cleanup: list[Path]) -> Path:
    """A folder is read in place; a zip is unpacked to a temporary folder outside EXEMPLAR_HOME (removed after)."""
    if src.is_file() and src.suffix.lower() == ".zip":
        tmp = Path(tempfile.mkdtemp(prefix="exemplar-dicom-"))
        cleanup.append(tmp)
        root, _ = layouts.extract_zip(src, tmp / "x")
        return Path(root).resolve()
    if not src.is_dir():
        raise FileNotFoundError("the DICOM source is neither a folder nor a .zip file")
    return src.resolve()


def import_dicom(path: str | Path, name: str, labels: str | Path | None, skip_bad: bool = False,
                 allow_burned_in: bool = False, pseudonym_map: str | Path | None = None, size: int | None = None,
                 seed: int = 0, user_id: int | None = None, progress=None, max_pixels: int = MAX_PIXELS,
                 meta: dict | None = None, uploaded: bool = False) -> dict:
    """Import (or add to) a DICOM dataset; returns {dataset_id, name, root, counts, report, created, imported}.
    Raises ImportRefused (nothing written) on bad files — burned-in ones included — without skip_bad."""
    from core.data.dicom import Deidentifier
    from services.datasets import ImportRefused, _say, check_name

    name, started, cleanup = check_name(name), utcnow(), []
    target_map = _check_map_target(pseudonym_map)
    try:
        root_in = _source_root(Path(path).expanduser(), cleanup)
        with session() as s:
            ex = s.scalars(select(Dataset).where(Dataset.name == name)).first()
            if ex is not None and ex.layout != "dicom":
                raise ValueError(f"dataset {name!r} already exists with layout {ex.layout}; pick another --name")
            if size is None:  # native size (issue 17): the existing dataset's side, else the first image's
                size = int(ex.image_size) if ex is not None else None
            if ex is not None and int(ex.image_size) != int(size):
                raise ValueError(f"dataset {name!r} exists at working size {ex.image_size}, not {size}")
            ex_id, ex_classes = (ex.id, list(ex.classes or [])) if ex else (None, [])
            known = set(s.scalars(select(Image.sha256).where(Image.dataset_id == ex_id))) if ex else set()
        _say(progress, 0.02, "scanning the DICOM folder")
        deid = Deidentifier(secret=pseudonym_key())
        items, bad, burned, classes, scanned, ignored = _scan(root_in, labels, progress, deid, allow_burned_in,
                                                              max_pixels, ex_classes)
        if size is None:
            from services.datasets import MAX_IMPORT_SIZE, MIN_IMPORT_SIZE
            side = max(items[0].pixels.shape[:2]) if items else 64
            size = int(min(MAX_IMPORT_SIZE, max(MIN_IMPORT_SIZE, side)))
        fresh, seen, dup = [], set(known), 0
        for it in items:
            if it.sha256 in seen:
                dup += 1
                continue
            seen.add(it.sha256)
            fresh.append(it)
        report = {"layout": "dicom", "source": "not recorded (DICOM)", "size": int(size),
                  "skip_bad": bool(skip_bad), "allow_burned_in": bool(allow_burned_in),
                  "started_at": started.isoformat(), "scanned": scanned, "imported": len(fresh),
                  "unchanged": dup, "duplicates": dup, "bad": bad, "bad_count": len(bad),
                  "ignored_count": ignored, "classes": classes, "burned_in": burned,
                  "patients": len({it.meta.get("patient") for it in fresh if it.meta.get("patient")}),
                  "deidentification": deid.report(),
                  "pseudonym_map": "written outside EXEMPLAR_HOME on request" if target_map else "not kept"}
        if bad and not skip_bad:
            raise ImportRefused(report)
        if ex_id is None and not fresh:
            raise ValueError(f"no importable DICOM images ({len(bad)} bad)")
        report["splits"] = _splits(fresh, classes, seed)
        return _store(name, fresh, classes, int(size), ex_id, report, user_id, meta, target_map, progress)
    finally:
        for p in cleanup:
            shutil.rmtree(p, ignore_errors=True)
        if uploaded:  # an uploaded zip holds the original names: it never stays under EXEMPLAR_HOME
            Path(path).unlink(missing_ok=True)


def _store(name, fresh, classes, size, ex_id, report, user_id, meta, target_map, progress) -> dict:
    """PNGs under generated names, then the rows, then the array cache; the PNGs go again if the rows fail."""
    from services.datasets import _Item, _arrays, _concat, _counts, _say, cache_path, load_arrays

    root = get_settings().path("datasets", name)
    _assign_names(fresh, root)
    _say(progress, 0.85, f"writing {len(fresh)} de-identified image(s)")
    written = _write_pngs(fresh, root)
    try:
        old = load_arrays(ex_id) if ex_id is not None and fresh else None
        with session() as s:
            if ex_id is None:
                d = Dataset(name=name, root=to_stored(root), layout="dicom", classes=classes, image_size=size,
                            counts={}, report={}, meta=dict(meta or {}), created_by=user_id)
                s.add(d)
                s.flush()
                start = 0
            else:
                d = s.get(Dataset, ex_id)
                start = int(s.scalar(select(func.max(Image.index)).where(Image.dataset_id == d.id)) or -1) + 1
            rows = [Image(dataset_id=d.id, path=it.stored, label=classes.index(it.label), split=it.split,
                          sha256=it.sha256, width=int(it.pixels.shape[1]), height=int(it.pixels.shape[0]),
                          meta=it.meta, index=start + i) for i, it in enumerate(fresh)]
            s.add_all(rows)
            s.flush()
            all_rows = s.execute(select(Image.label, Image.split).where(Image.dataset_id == d.id)).all()
            d.counts = _counts([r[0] for r in all_rows], [r[1] for r in all_rows], classes)
            report["finished_at"] = utcnow().isoformat()
            d.report = report
            dataset_id, counts, ids = d.id, d.counts, [im.id for im in rows]
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    recs = [layouts.Record(path=it.stored, label=it.label, split=it.split) for it in fresh]
    its = [_Item(r, it.sha256, int(it.pixels.shape[1]), int(it.pixels.shape[0]), resize_image(it.pixels, size),
                 None, None, None, it.meta) for r, it in zip(recs, fresh)]
    new = _arrays(its, [classes.index(it.label) for it in fresh], [it.split for it in fresh], ids, classes, size)
    _say(progress, 0.95, "writing the array cache", committed=True)
    try:
        (_concat(old, new) if old is not None else new).save(cache_path(dataset_id))
    except OSError:
        cache_path(dataset_id).unlink(missing_ok=True)  # rebuilt from the PNGs on the next load
    if target_map is not None:
        _write_map(target_map, fresh)
    _say(progress, 1.0, f"dataset {name}: {len(fresh)} DICOM image(s) imported, {len(report['bad'])} bad",
         committed=True)
    return {"dataset_id": dataset_id, "name": name, "root": str(root), "counts": counts, "report": report,
            "created": ex_id is None, "imported": len(fresh)}
