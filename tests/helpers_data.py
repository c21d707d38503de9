"""Test helpers for datasets: small SynthCXR trees, database snapshots, bad files and DICOM files made with pydicom."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import text

from core.data import synthcxr


def small_tree(root: Path, n: int = 48, size: int = 32, seed: int = 0) -> dict:
    """A small SynthCXR tree in the COVID-19 Radiography layout (plus splits.csv, attributes.csv)."""
    return synthcxr.write_tree(root, n=n, size=size, confounder=0.9, seed=seed)


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(a))
    return path


def bomb_png(path: Path, side: int = 9000) -> Path:
    """A tiny file whose header claims side×side pixels (a decompression bomb for MAX_PIXELS = 50M)."""
    Image.new("1", (side, side)).save(path, format="PNG")
    return path


def db_snapshot() -> dict:
    """Every row of the dataset tables as JSON text: equal snapshots mean an unchanged database."""
    from services.platform.database import session

    out = {}
    with session() as s:
        for table in ("datasets", "images"):
            rows = s.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()
            out[table] = json.dumps([list(map(str, r)) for r in rows])
    return out


def db_text() -> str:
    """Everything stored in every table, as one string (for PHI searches)."""
    from services.platform.database import session

    parts = []
    with session() as s:
        tables = [r[0] for r in s.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).all()]
        for t in tables:
            for r in s.execute(text(f'SELECT * FROM "{t}"')).all():
                parts.append(" ".join(map(str, r)))
    return "\n".join(parts)


PHI = {
    "PatientName": "Doe^Jane", "PatientID": "PID-93517", "PatientBirthDate": "19610412",
    "InstitutionName": "St Example Hospital", "AccessionNumber": "ACC778899", "StudyDate": "20240229",
    "ReferringPhysicianName": "House^Gregory", "OtherPatientIDs": "ALT-55501", "PatientAddress": "12 Elm Street",
    "StudyID": "STUDY4242", "OperatorsName": "Tech^Tina", "StationName": "XRAYROOM7",
}
UIDS = {"StudyInstanceUID": "1.2.826.0.1.3680043.99.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.99.2"}


def make_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 16,
               window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
               voi_lut: np.ndarray | None = None, sop_uid: str = "1.2.826.0.1.3680043.99.3.1",
               phi: dict | None = None) -> Path:
    """A DICOM CR image written with pydicom, with PHI tags, a private tag and the given pixel encoding."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    for k, v in {**PHI, **UIDS, **(phi or {})}.items():
        setattr(ds, k, v)
    ds.Modality = "CR"
    ds.PatientSex = "F"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUTData as US values
        ds.VOILUTSequence = Sequence([item])
    ds.add_new(0x00111010, "LO", "private secret Doe")
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
