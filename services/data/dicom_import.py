"""DICOM import without PHI: pixels are de-identified in memory and stored under generated names
(`<pseudonym>/<study>/<n>.png` under $EXEMPLAR_HOME/datasets/<name>); original file and folder names and tags
are never stored, reported, cached or exported (bad files are named by their number in sorted path order).

Pseudonyms and replacement UIDs are keyed hashes (a per-installation key in $EXEMPLAR_HOME/secrets), so a
re-import maps the same patient to the same pseudonym. The map back to the originals is written only when asked,
to a file outside EXEMPLAR_HOME. Images flagged BurnedInAnnotation = YES are refused unless allowed.

Each image is decoded, written as a PNG to a staging folder and as a working-size row to the RowSpill, then
dropped: memory stays flat, and the rows and the array cache go through the writers every layout uses
(services.data.datasets.register_rows / write_cache; docs/architecture.md, Data import).
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from core.data import layouts
from core.data.checks import MAX_PIXELS, BadFile, resize_image
from core.data.grouping import grouped_splits
from db.models import Dataset, Image, utcnow
from services.platform.database import session
from services.data.datasets import (NOT_UTF8, ImportRefused, ImportScan, Item, check_name, load_arrays, native_size,
                               printable_name, readable_name, register_rows, say, write_cache)
from services.platform.settings import get_settings
from services.team.access import check_use_case

BURNED_IN = ("burned-in annotation (BurnedInAnnotation = YES): the pixels may show identifiers; "
             "use --allow-burned-in to import such images, or --skip-bad to import the rest")


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
        raise FileNotFoundError("the folder for the pseudonym map does not exist: create it, or give another path")
    return target




@dataclass
class _Run:
    """One import's streaming state: the items so far (metadata only: each image's pixels went to the spill and
    its PNG to the staging folder as soon as it was decoded), the bad files, the counts and, for the pseudonym
    map only, the original relative paths (in memory, never stored)."""

    root_in: Path
    staging: Path
    final_root: Path
    size: int
    classes: list[str]
    known: set[str]
    items: list[Item] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    burned: dict = field(default_factory=lambda: {"found": 0, "refused": 0, "imported": 0})
    duplicates: int = 0
    next_no: dict = field(default_factory=dict)


def _stored_name(run: _Run, meta: dict) -> str:
    """<pseudonym>/<study>/<n>.png, n counting on from what the dataset's folder already holds."""
    study = "S" + hashlib.sha256(str(meta.get("StudyInstanceUID", "none")).encode()).hexdigest()[:8]
    folder = f"{meta.get('patient') or 'unknown'}/{study}"
    if folder not in run.next_no:
        have = [int(m.group(1)) for f in (run.final_root / folder).glob("*.png")
                if (m := re.fullmatch(r"(\d+)\.png", f.name))]
        run.next_no[folder] = max(have, default=0) + 1
    n = run.next_no[folder]
    run.next_no[folder] = n + 1
    return f"{folder}/{n}.png"


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    PILImage.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)


def _take(run: _Run, rec: layouts.Record, di, spill, keep_original: bool) -> None:
    """One decoded, de-identified image: its PNG to the staging folder, its working-size row to the import's
    RowSpill (the writer the PNG path uses), only its metadata kept; a repeat of known content is counted."""
    if di.sha256 in run.known:
        run.duplicates += 1
        return
    run.known.add(di.sha256)
    stored = _stored_name(run, di.meta)
    _write_png(run.staging / stored, di.pixels)
    h, w = di.pixels.shape
    spill.put(len(run.items), {"images": resize_image(di.pixels, run.size)})
    item = Item(layouts.Record(path=stored, label=rec.label, split=rec.split), di.sha256, int(w), int(h),
                None, None, None, None, di.meta, masks=(False, False, False))
    run.items.append(item)
    if keep_original:
        run.originals.append(printable_name(rec.path))


def _stream(run: _Run, sc, deid, allow_burned_in: bool, max_pixels: int, spill, progress, keep_original) -> int:
    """Decode every DICOM of the scan once, one at a time; bad files are named by their number in sorted path
    order only. Returns how many records were read."""
    from core.data.dicom import read_dicom

    numbers = {p: i + 1 for i, p in enumerate(sorted({r.path for r in sc.records} | {b.path for b in sc.bad}))}
    run.bad = [{"path": f"file #{numbers[b.path]}",
                "reason": NOT_UTF8 if not readable_name(b.path) else scrub(b.reason, b.path, run.root_in)}
               for b in sc.bad]
    n = len(sc.records)
    for k, rec in enumerate(sc.records):
        if progress and k % 50 == 0:
            progress(0.05 + 0.85 * k / max(1, n), f"reading DICOM {k}/{n}")
        no = numbers[rec.path]
        if rec.label not in run.classes:
            run.bad.append({"path": f"file #{no}",
                            "reason": f"class {rec.label!r} is not one of {', '.join(run.classes)}"})
            continue
        try:
            di = read_dicom(run.root_in / rec.path, deid, max_pixels)
        except BadFile as exc:
            run.bad.append({"path": f"file #{no}", "reason": scrub(str(exc), rec.path, run.root_in)})
            continue
        if di.burned_in:
            run.burned["found"] += 1
            if not allow_burned_in:
                run.burned["refused"] += 1
                run.bad.append({"path": f"file #{no}", "reason": BURNED_IN})
                continue
            run.burned["imported"] += 1
        _take(run, rec, di, spill, keep_original)
        del di  # the decoded pixels go now: the import holds one image at a time
    return n


def _write_map(target: Path, run: _Run, deid) -> None:
    """pseudonym, patient id, original path, stored path: written only on request, outside EXEMPLAR_HOME."""
    patient_of = {p: o for o, p in deid.patient_map.items()}
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pseudonym", "patient_id", "original_path", "stored_path"])
        for it, original in zip(run.items, run.originals):
            pseudo = it.meta.get("patient") or ""
            w.writerow([pseudo, patient_of.get(pseudo, ""), original, it.rec.path])


def _spread(auto: np.ndarray, keys: list[str], seed: int) -> np.ndarray:
    """With 3 or more patients, val and test get at least one patient each: grouped_splits cuts each label's
    patients at image shares, so a handful of patients (5, say) can all land in train (issue 23). A patient
    moves whole, from the split that holds the most patients, in a seeded draw."""
    split_of = {k: str(auto[i]) for i, k in enumerate(keys)}
    if len(split_of) < 3:
        return auto
    rng = np.random.default_rng([seed, 0x5E7])
    for need in ("test", "val"):
        held = Counter(split_of.values())
        if held[need]:
            continue
        donor = max(held, key=lambda s: (held[s], s == "train"))
        pool = sorted(k for k, s in split_of.items() if s == donor)
        split_of[pool[int(rng.integers(len(pool)))]] = need
    return np.asarray([split_of[k] for k in keys])


def _splits(items: list[Item], classes: list[str], seed: int) -> str:
    """Splits from the labels CSV, else grouped by patient pseudonym (no patient in two splits), seeded."""
    missing = [i for i, it in enumerate(items) if not it.rec.split]
    if not missing:
        return "from the labels CSV"
    lab = np.array([classes.index(items[i].rec.label) for i in missing], np.int64)
    groups = [items[i].meta.get("patient") for i in missing]
    auto = _spread(grouped_splits(lab, groups, seed), [g or f"\0image{j}" for j, g in enumerate(groups)], seed)
    for j, i in enumerate(missing):
        items[i].rec.split = str(auto[j])
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


def _existing(name: str, size: int | None) -> tuple[int | None, list[str], set[str], int | None]:
    """(id, classes, content hashes, size) of the DICOM dataset being added to; (None, [], set(), size) for a new
    name. Refuses a name taken by another layout or a different working size."""
    with session() as s:
        ex = s.scalars(select(Dataset).where(Dataset.name == name)).first()
        if ex is None:
            return None, [], set(), size
        if ex.layout != "dicom":
            raise ValueError(f"dataset {name!r} already exists with layout {ex.layout}; pick another --name")
        size = int(ex.image_size) if size is None else int(size)  # native size: the existing dataset's side
        if int(ex.image_size) != size:
            raise ValueError(f"dataset {name!r} exists at working size {ex.image_size}, not {size}")
        return ex.id, list(ex.classes or []), set(s.scalars(select(Image.sha256).where(Image.dataset_id == ex.id))), size


def _report(run: _Run, deid, scanned: int, ignored: int, skip_bad, allow_burned_in, started, target_map) -> dict:
    return {"layout": "dicom", "source": "not recorded (DICOM)", "size": int(run.size),
            "skip_bad": bool(skip_bad), "allow_burned_in": bool(allow_burned_in),
            "started_at": started.isoformat(), "scanned": scanned, "imported": len(run.items),
            "unchanged": run.duplicates, "duplicates": run.duplicates, "bad": run.bad, "bad_count": len(run.bad),
            "ignored_count": ignored, "classes": run.classes, "burned_in": run.burned,
            "patients": len({it.meta.get("patient") for it in run.items if it.meta.get("patient")}),
            "deidentification": deid.report(),
            "pseudonym_map": "written outside EXEMPLAR_HOME on request" if target_map else "not kept"}


def import_dicom(path: str | Path, name: str, labels: str | Path | None, skip_bad: bool = False,
                 allow_burned_in: bool = False, pseudonym_map: str | Path | None = None, size: int | None = None,
                 seed: int = 0, *, user_id: int | None, progress=None, max_pixels: int = MAX_PIXELS,
                 meta: dict | None = None, uploaded: bool = False) -> dict:
    """Import (or add to) a DICOM dataset; returns {dataset_id, name, root, counts, report, created, imported}.
    Raises ImportRefused (nothing written) on bad files — burned-in ones included — without skip_bad.
    Streams: each image is decoded, written as a PNG to a staging folder and as a row to the RowSpill, then
    dropped; peak memory does not grow with the number of images (bench/dicom_import.py)."""
    check_use_case(user_id, "data.import")  # a direct call is checked here; a job was checked when submitted
    from core.data.dicom import Deidentifier
    from core.data.spill import RowSpill

    name, started, cleanup = check_name(name), utcnow(), []
    target_map = _check_map_target(pseudonym_map)
    try:
        root_in = _source_root(Path(path).expanduser(), cleanup)
        ex_id, ex_classes, known, size = _existing(name, size)
        say(progress, 0.02, "scanning the DICOM folder")
        sc = layouts.scan(root_in, "dicom", labels_csv=labels)
        size = int(size) if size is not None else native_size(root_in, sc.records)
        datasets_dir = get_settings().path("datasets")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=datasets_dir))
        cleanup.append(staging)
        run = _Run(root_in, staging, datasets_dir / name, size, ex_classes or sc.classes, known)
        deid = Deidentifier(secret=pseudonym_key())
        with RowSpill(get_settings().path("cache"), size) as spill:  # deleted on every way out
            scanned = _stream(run, sc, deid, allow_burned_in, max_pixels, spill, progress, target_map is not None)
            report = _report(run, deid, scanned, len(sc.ignored), skip_bad, allow_burned_in, started, target_map)
            if run.bad and not skip_bad:
                raise ImportRefused(report)
            if ex_id is None and not run.items:
                raise ValueError(f"no importable DICOM images ({len(run.bad)} bad)")
            report["splits"] = _splits(run.items, run.classes, seed)
            res = _store(name, run, ex_id, report, user_id, meta, spill, progress)
        if target_map is not None:
            _write_map(target_map, run, deid)
        return res
    finally:
        for p in cleanup:
            shutil.rmtree(p, ignore_errors=True)
        if uploaded:  # an uploaded zip holds the original names: it never stays under EXEMPLAR_HOME
            Path(path).unlink(missing_ok=True)


def _publish(run: _Run) -> list[Path]:
    """Move the staged PNGs into the dataset's folder; returns what was moved (removed again if the rows fail)."""
    moved = []
    for it in run.items:
        dest = run.final_root / it.rec.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run.staging / it.rec.path, dest)
        moved.append(dest)
    return moved


def _store(name, run: _Run, ex_id, report, user_id, meta, spill, progress) -> dict:
    """The PNGs into place, then the rows and the array cache through the writers every layout uses
    (services.data.datasets.register_rows / write_cache); the PNGs go again if the rows fail."""
    say(progress, 0.92, f"registering {len(run.items)} de-identified image(s)")
    old = load_arrays(ex_id) if ex_id is not None and run.items else None
    scan = ImportScan(new=run.items, changed=[], unchanged=run.duplicates, duplicates=[])
    moved = _publish(run)
    try:
        dataset_id, counts, ids = register_rows(ex_id, name, run.final_root, "dicom", run.classes, run.size, meta,
                                                user_id, scan, report)
    except BaseException:
        for p in moved:
            p.unlink(missing_ok=True)
        raise
    say(progress, 0.95, "writing the array cache", committed=True)
    write_cache(dataset_id, scan, ids, run.classes, run.size, old, spill)
    say(progress, 1.0, f"dataset {name}: {len(run.items)} DICOM image(s) imported, {len(report['bad'])} bad",
        committed=True)
    return {"dataset_id": dataset_id, "name": name, "root": str(run.final_root), "counts": counts,
            "report": report, "created": ex_id is None, "imported": len(run.items)}
