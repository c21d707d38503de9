"""DICOM import memory (issue 23): writes --n DICOM files (2,000 by default) of --size² 16-bit pixels (1024) for
--patients patients to a temporary folder, imports them in a child process as the `data.import` job runs them
(services.data.importing.import_job_params + services.jobs.lifecycle.run_inline: what `exemplar data import --layout dicom` runs,
without the CLI's start-up) and prints one table row:

  images, size, seconds, peak RSS MB of the child (resource.getrusage(RUSAGE_CHILDREN).ru_maxrss), goal, met/missed

Goal: peak RSS ≤ 500 MB at 2,000 images of 1024² (the importer streams each image through the array cache's
RowSpill; it used to hold every image until the end). --cli runs `exemplar data import` instead (the CLI starts
without torch: about 45 MB before the import).
Usage: python bench/dicom_import.py [--n 2000] [--size 1024] [--patients 100] [--cli] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_MB = 500

CHILD = """
import sys
from services.data.importing import import_job_params
from services.jobs.lifecycle import run_inline
from services.team.users import get_or_create_user
src, labels = sys.argv[1], sys.argv[2]
params = import_job_params(src, "dicom", "bench", labels=labels, skip_bad=False, size=None, seed=0,
                           allow_burned_in=False)
row = run_inline("data.import", params, get_or_create_user("bench"), echo=False)
if row["status"] != "succeeded":
    sys.exit(f"import {row['status']}: {row['error']}")
print(row["result"]["report"]["imported"])
"""


def write_corpus(root: Path, n: int, size: int, patients: int) -> Path:
    """n DICOM CR images (16-bit, MONOCHROME2) in one folder per patient and the labels CSV; returns the CSV."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = (1000 + 2000 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 3) ** 2)))
    rows = ["path,label"]
    for k in range(n):
        p = k % patients
        folder = root / f"patient{p:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.Modality = f"Bench^P{p}", f"BENCH-{p:05d}", "CR"
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
        px = base + rng.normal(0, 60, (size, size))
        ds.PixelData = np.clip(px, 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{k:05d}.dcm", enforce_file_format=True)
        rows.append(f"patient{p:04d}/{k:05d}.dcm,{'COVID' if p % 2 else 'Normal'}")
    labels = root.parent / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def run_import(src: Path, labels: Path, home: Path, cli: bool) -> float:
    """Import in one child process (the only child: RUSAGE_CHILDREN is its peak); returns seconds."""
    env = {**os.environ, "EXEMPLAR_HOME": str(home), "EXEMPLAR_USER": "bench", "PYTHONPATH": str(ROOT)}
    env.pop("EXEMPLAR_DATABASE_URL", None)
    env.pop("EXEMPLAR_QUEUE_URL", None)
    if cli:
        exe = Path(sys.executable).with_name("exemplar")
        cmd = [str(exe), "data", "import", str(src), "--layout", "dicom", "--labels", str(labels), "--name", "bench",
               "--json"]
    else:
        cmd = [sys.executable, "-c", CHILD, str(src), str(labels)]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"the import failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="number of DICOM files")
    ap.add_argument("--size", type=int, default=1024, help="rows = columns of each image")
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--cli", action="store_true", help="import through `exemplar data import` (CLI start-up too)")
    ap.add_argument("--keep", default=None, help="write the corpus and home here and keep them")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="exemplar-dicom-bench-"))
    try:
        t = time.perf_counter()
        labels = write_corpus(work / "in", a.n, a.size, max(1, min(a.patients, a.n)))
        write_s = time.perf_counter() - t
        secs = run_import(work / "in", labels, work / "home", a.cli)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
        how = "exemplar data import (CLI)" if a.cli else "data.import job (run_inline)"
        print(f"# bench/dicom_import.py --n {a.n} --size {a.size} --patients {a.patients}{' --cli' if a.cli else ''}"
              f": {how}; corpus written in {write_s:.0f} s")
        print(f"{'images':>7} {'size':>9} {'seconds':>8} {'peak RSS MB':>12} {'goal MB':>8}  result")
        print(f"{a.n:>7} {f'{a.size}x{a.size}':>9} {secs:>8.1f} {peak_mb:>12.0f} {GOAL_MB:>8}  "
              f"{'met' if peak_mb <= GOAL_MB else 'missed'}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
