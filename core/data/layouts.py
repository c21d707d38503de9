"""Scanning dataset trees (covid-radiography, imagefolder, dicom) into records, and safe zip extraction.

Scanning only walks and pairs files (image, masks, label, split); decoding happens in the importer. Paths and
symlinks that lead outside the root, unknown class folders, bad CSV rows and unsafe zip entries become
`Bad(path, reason)` entries for the import report.
"""
from __future__ import annotations

import csv
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from core.data.checks import IMAGE_EXTS

COVID_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
SPLITS = ("train", "val", "test", "test_shifted")
LAYOUTS = ("covid-radiography", "imagefolder", "dicom")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
IGNORED_DIRS = {"__MACOSX", ".git", ".ipynb_checkpoints"}
ROOT_FILES = {"splits.csv", "attributes.csv", "synthcxr.json"}


@dataclass
class Record:
    """One image to import; paths are POSIX and relative to the root."""

    path: str
    label: str
    mask: str | None = None
    lesion_mask: str | None = None
    marker_mask: str | None = None
    split: str | None = None
    kind: str = "image"  # image | dicom


@dataclass
class Bad:
    path: str
    reason: str

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Scan:
    root: Path
    layout: str
    records: list[Record] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def safe_relpath(root: Path, rel: str) -> Path | None:
    """root/rel when rel is relative, has no '..' escape and resolves (symlinks too) inside root; else None."""
    rel = rel.replace("\\", "/").strip()
    pp = PurePosixPath(rel)
    if not rel or pp.is_absolute() or (len(rel) > 1 and rel[1] == ":"):
        return None
    p = root / pp
    return p if _inside(p, root) else None


def walk_files(root: Path, top: Path, scan: Scan) -> list[Path]:
    """Files under top (sorted, recursive) that stay inside root; escaping symlinks go to scan.bad."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        d = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            sub = d / name
            if name in IGNORED_DIRS or name.startswith("."):
                scan.ignored.append(_rel(sub, root) + "/")
                continue
            if sub.is_symlink():
                if not _inside(sub, root):
                    scan.bad.append(Bad(_rel(sub, root) + "/", "symlink leads outside the dataset root"))
                else:
                    scan.ignored.append(_rel(sub, root) + "/ (symlink to a folder inside the root)")
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            f = d / name
            if name.startswith("."):
                continue
            if f.is_symlink() and not _inside(f, root):
                scan.bad.append(Bad(_rel(f, root), "symlink leads outside the dataset root"))
                continue
            out.append(f)
    return out


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in rows]


def read_splits(root: Path, scan: Scan, csv_path: Path | None = None) -> dict[str, str]:
    """splits.csv (path,split) → {relative path: split}; bad rows go to scan.bad."""
    f = csv_path or root / "splits.csv"
    if not f.exists():
        return {}
    out = {}
    for row in _read_csv(f):
        rel, split = row.get("path", ""), row.get("split", "")
        p = safe_relpath(root, rel)
        if p is None:
            scan.bad.append(Bad(rel, f"{f.name}: path leads outside the dataset root"))
            continue
        if split not in SPLITS:
            scan.bad.append(Bad(rel, f"{f.name}: unknown split {split!r} (use one of {', '.join(SPLITS)})"))
            continue
        out[p.relative_to(root).as_posix()] = split
    return out


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def scan_covid_radiography(root: Path, scan: Scan) -> None:
    """`<class>/images/*` with `<class>/masks/*` (plus SynthCXR's `lesion_masks/`, `marker_masks/`)."""
    present = set()
    for entry in sorted(root.iterdir()):
        name = entry.name
        if entry.is_file() and not entry.is_symlink():
            if name not in ROOT_FILES:
                scan.ignored.append(name)
            continue
        if name in IGNORED_DIRS or name.startswith("."):
            scan.ignored.append(name + "/")
            continue
        if entry.is_symlink() and not _inside(entry, root):
            scan.bad.append(Bad(name + ("/" if entry.is_dir() else ""), "symlink leads outside the dataset root"))
            continue
        if not entry.is_dir():
            scan.ignored.append(name)
            continue
        if name not in COVID_CLASSES:
            scan.bad.append(Bad(name + "/", f"unknown class folder {name!r} (expected {', '.join(COVID_CLASSES)})"))
            continue
        if not (entry / "images").is_dir():
            scan.bad.append(Bad(name + "/", "class folder has no images/ folder"))
            continue
        for extra in sorted(entry.iterdir()):
            if extra.name not in ("images", "masks", "lesion_masks", "marker_masks"):
                scan.ignored.append(_rel(extra, root))
        for f in walk_files(root, entry / "images", scan):
            rel = _rel(f, root)
            if not _is_image(f):
                scan.ignored.append(rel)
                continue
            sub = f.relative_to(entry / "images")
            masks = {}
            for kind, folder in (("mask", "masks"), ("lesion_mask", "lesion_masks"), ("marker_mask", "marker_masks")):
                m = entry / folder / sub
                if m.exists() or m.is_symlink():
                    if not _inside(m, root):
                        scan.bad.append(Bad(_rel(m, root), "symlink leads outside the dataset root"))
                        m = None
                    masks[kind] = _rel(m, root) if m is not None else None
            if any(v is None for v in masks.values()):
                continue  # an escaping mask makes the image bad too (reported above)
            scan.records.append(Record(path=rel, label=name, **masks))
            present.add(name)
    scan.classes = [c for c in COVID_CLASSES if c in present]


def scan_imagefolder(root: Path, scan: Scan, classes: list[str] | None = None) -> None:
    """`<class>/**/*.png|jpg` with optional masks in a parallel `masks/<class>/` tree."""
    found = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name == "masks" or name in IGNORED_DIRS or name.startswith(".") or name in ROOT_FILES:
            continue
        if entry.is_symlink() and not _inside(entry, root):
            scan.bad.append(Bad(name + ("/" if entry.is_dir() else ""), "symlink leads outside the dataset root"))
            continue
        if not entry.is_dir():
            scan.ignored.append(name)
            continue
        if classes is not None and name not in classes:
            scan.bad.append(Bad(name + "/", f"unknown class folder {name!r} (expected {', '.join(classes)})"))
            continue
        found.append(name)
        for f in walk_files(root, entry, scan):
            rel = _rel(f, root)
            if not _is_image(f):
                scan.ignored.append(rel)
                continue
            rec = Record(path=rel, label=name)
            m = root / "masks" / f.relative_to(root)
            if m.exists() or m.is_symlink():
                if not _inside(m, root):
                    scan.bad.append(Bad(_rel(m, root), "symlink leads outside the dataset root"))
                    continue
                rec.mask = _rel(m, root)
            scan.records.append(rec)
    scan.classes = list(classes) if classes is not None else found


def scan_dicom(root: Path, scan: Scan, labels_csv: Path | None) -> None:
    """`**/*.dcm` with labels from a CSV `path,label[,split]` (path relative to root)."""
    if labels_csv is None:
        raise ValueError("the dicom layout needs --labels CSV with columns path,label[,split]")
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise FileNotFoundError(f"labels CSV {labels_csv} not found")
    rows = _read_csv(labels_csv)
    if rows and ("path" not in rows[0] or "label" not in rows[0]):
        raise ValueError(f"labels CSV {labels_csv} needs columns path,label[,split]")
    labels: dict[str, tuple[str, str | None]] = {}
    for row in rows:
        rel = row.get("path", "")
        p = safe_relpath(root, rel)
        if p is None:
            scan.bad.append(Bad(rel, "labels CSV: path leads outside the dataset root"))
            continue
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            scan.bad.append(Bad(rel, f"labels CSV: unknown split {split!r}"))
            continue
        if not row.get("label"):
            scan.bad.append(Bad(rel, "labels CSV: empty label"))
            continue
        labels[p.relative_to(root).as_posix()] = (row["label"], split)
    seen = set()
    for f in walk_files(root, root, scan):
        rel = _rel(f, root)
        if f.suffix.lower() not in (".dcm", ".dicom"):
            if f.resolve() != labels_csv.resolve():
                scan.ignored.append(rel)
            continue
        if rel not in labels:
            scan.bad.append(Bad(rel, "no label in the labels CSV"))
            continue
        lab, split = labels[rel]
        scan.records.append(Record(path=rel, label=lab, split=split, kind="dicom"))
        seen.add(rel)
    for rel in sorted(set(labels) - seen):
        if not any(b.path == rel for b in scan.bad):
            scan.bad.append(Bad(rel, "listed in the labels CSV but not found"))
    names = sorted({lab for lab, _ in labels.values()})
    scan.classes = [c for c in COVID_CLASSES if c in names] if set(names) <= set(COVID_CLASSES) else names


def scan(root: str | Path, layout: str, labels_csv: str | Path | None = None,
         classes: list[str] | None = None) -> Scan:
    """Walk root in the given layout; splits.csv (or the labels CSV's split column) fills Record.split."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} not found")
    root = root.resolve()
    sc = Scan(root=root, layout=layout)
    if layout == "covid-radiography":
        scan_covid_radiography(root, sc)
    elif layout == "imagefolder":
        scan_imagefolder(root, sc, classes)
    else:
        scan_dicom(root, sc, Path(labels_csv) if labels_csv else None)
    if layout != "dicom":
        splits = read_splits(root, sc)
        for r in sc.records:
            r.split = splits.get(r.path)
    return sc


def stratified_splits(labels: np.ndarray, seed: int, fractions: dict[str, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Seeded stratified split names for integer labels; each class is cut at the cumulative fractions."""
    rng = np.random.default_rng([seed, 0x5B1])
    names = [s for s in fractions if fractions[s] > 0]
    fr = np.array([fractions[s] for s in names], float)
    fr = fr / fr.sum()
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        cuts = np.round(np.cumsum(fr) * len(idx)).astype(int)
        cuts[-1] = len(idx)
        start = 0
        for name, end in zip(names, cuts):
            out[idx[start:end]] = name
            start = end
    return out.astype(str) if len(labels) else np.zeros(0, dtype=str)


# ----------------------------------------------------------------------------------------------- zip upload

ZIP_MAX_TOTAL = 4 << 30     # 4 GiB uncompressed in all
ZIP_MAX_RATIO = 200         # per entry, above 1 MiB
ZIP_MAX_ENTRIES = 200_000


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


ZIP_FULL_CHECK = 1 << 30    # a zip up to 1 GiB has every entry's CRC read before its import is queued
DICOM_EXTS = (".dcm", ".dicom")


def _open_zip(zip_path: str | Path, shown: str, max_total: int) -> tuple[zipfile.ZipFile, list, int]:
    """The open zip, its entries and their declared size, or ValueError (one line naming the zip as `shown`) when it
    does not open, has too many entries or would unpack beyond max_total."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise ValueError(f"{shown} is not a readable zip (damaged, cut short, or another format): make the zip "
                         "again") from None
    infos = zf.infolist()
    declared = sum(i.file_size for i in infos)
    if len(infos) > ZIP_MAX_ENTRIES or declared > max_total:
        zf.close()
        raise ValueError(f"{shown} has {len(infos):,} entries and would unpack to {declared / 2**30:.2f} GiB (limits "
                         f"{ZIP_MAX_ENTRIES:,} and {max_total / 2**30:.2f} GiB; a zip bomb?): import the folder from "
                         "a server path instead")
    return zf, infos, declared


def check_zip(zip_path: str | Path, shown: str, free_bytes: int | None = None) -> None:
    """Refuse a zip before its import is queued (a damaged upload failed in the queue minutes later): it must open
    as a zip, hold images, unpack within the limits and the free disk, and (up to ZIP_FULL_CHECK) pass every
    entry's CRC. Raises ValueError, one line naming the zip as `shown` and never a file inside it."""
    zf, infos, declared = _open_zip(zip_path, shown, ZIP_MAX_TOTAL)
    with zf:
        if free_bytes is not None and declared > free_bytes:
            raise ValueError(f"{shown} would unpack to {declared / 2**30:.2f} GiB but only {free_bytes / 2**30:.2f} "
                             "GiB are free on the server: free some space first")
        if not any(PurePosixPath(i.filename).suffix.lower() in IMAGE_EXTS + DICOM_EXTS for i in infos):
            raise ValueError(f"{shown} holds no PNG, JPEG or DICOM image: check that it is the dataset's zip")
        if Path(zip_path).stat().st_size <= ZIP_FULL_CHECK and not _entries_read(zf, infos):
            raise ValueError(f"{shown} is damaged (a file inside it fails its check): make the zip again and "
                             "upload it")


def _entries_read(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> bool:
    """Whether every plain (not encrypted, not a folder) entry reads to its end with a matching CRC."""
    try:
        for info in infos:
            if info.is_dir() or info.flag_bits & 0x1:  # encrypted entries are skipped at import (reported there)
                continue
            with zf.open(info) as fh:
                while fh.read(1 << 20):
                    pass
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError):
        return False
    return True


def extract_zip(zip_path: str | Path, target: str | Path, max_total: int = ZIP_MAX_TOTAL,
                max_ratio: int = ZIP_MAX_RATIO) -> tuple[Path, list[Bad]]:
    """Unpack a zip into target safely; returns (dataset root inside target, bad entries).

    Entries that would land outside target (absolute, '..', drive letters), symlink entries, encrypted entries
    and entries whose compression ratio or real size betrays a zip bomb are not written and come back as Bad.
    The root is target itself, or its single top-level folder when the zip holds exactly one.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    troot = target.resolve()
    bad: list[Bad] = []
    zf, infos, declared = _open_zip(zip_path, "the zip", max_total)
    with zf:
        written = 0
        for info in infos:
            name = info.filename
            norm = name.replace("\\", "/")
            pp = PurePosixPath(norm)
            dest = troot / pp
            if pp.is_absolute() or (len(norm) > 1 and norm[1] == ":") or not _inside_lexical(dest, troot):
                bad.append(Bad(name, "zip entry would unpack outside the target folder (zip slip)"))
                continue
            if _zip_is_symlink(info):
                bad.append(Bad(name, "zip entry is a symbolic link"))
                continue
            if info.flag_bits & 0x1:
                bad.append(Bad(name, "zip entry is encrypted"))
                continue
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            if info.file_size > (1 << 20) and info.file_size > max_ratio * max(1, info.compress_size):
                bad.append(Bad(name, f"zip entry compression ratio {info.file_size // max(1, info.compress_size)}:1 "
                                     f"exceeds {max_ratio}:1 (zip bomb)"))
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(dest.parent, troot):
                bad.append(Bad(name, "zip entry would unpack outside the target folder (zip slip)"))
                continue
            n = 0
            try:
                with zf.open(info) as src, open(dest, "wb") as out:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        n += len(block)
                        written += len(block)
                        if n > info.file_size or written > max_total:
                            raise ValueError("entry is larger than declared (zip bomb)")
                        out.write(block)
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
                dest.unlink(missing_ok=True)
                bad.append(Bad(name, f"zip entry cannot be extracted: {exc}"))
    tops = [p for p in troot.iterdir() if p.name not in IGNORED_DIRS and not p.name.startswith(".")]
    root = tops[0] if len(tops) == 1 and tops[0].is_dir() else troot
    return root, bad


def _inside_lexical(p: Path, root: Path) -> bool:
    """Inside root by normalised path (no filesystem access): catches '..' in zip names."""
    norm = Path(os.path.normpath(p))
    return norm == root or norm.is_relative_to(root)


def remove_tree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
