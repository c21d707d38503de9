"""DICOM import: modality LUT, window / VOI LUT, MONOCHROME1, 16-bit, and no PHI left anywhere after import
(neither tags nor original file / folder names: images are stored under generated names)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from services.data import datasets as D
from services.data import importing as I
from services.platform import uploads
from tests.helpers_data import PHI, UIDS, db_text, make_dicom


def _ramp(h=48, w=40, hi=65535):
    return np.tile(np.linspace(0, hi, w).round().astype(np.uint16), (h, 1))


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (24, 24)).astype(np.uint16)


@pytest.fixture
def dicom_tree(tmp_path):
    root = tmp_path / "dcm"
    # 16-bit MONOCHROME1 with a window covering the middle half of the range
    make_dicom(root / "a" / "mono1.dcm", _ramp(), "MONOCHROME1", bits=16, window=(32768, 32768),
               sop_uid="1.2.826.0.1.3680043.99.3.1")
    # 12-bit MONOCHROME2 with a modality rescale and no window (min-max)
    make_dicom(root / "a" / "mono2.dcm", _ramp(hi=4095), "MONOCHROME2", bits=12, rescale=(2.0, -1024.0),
               sop_uid="1.2.826.0.1.3680043.99.3.2")
    # a VOI LUT sequence that maps everything above 1000 to white
    lut = np.clip(np.arange(4096) * 65535 // 1000, 0, 65535)
    make_dicom(root / "b" / "lut.dcm", _ramp(hi=4095), "MONOCHROME2", bits=12, voi_lut=lut,
               sop_uid="1.2.826.0.1.3680043.99.3.3")
    for i in range(3):
        make_dicom(root / "b" / f"n{i}.dcm", _ramp(hi=4000 - 500 * i), "MONOCHROME2", bits=12, window=(1500, 3000),
                   sop_uid=f"1.2.826.0.1.3680043.99.3.{10 + i}")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\n"
                      "a/mono1.dcm,COVID,train\na/mono2.dcm,Normal,train\nb/lut.dcm,COVID,test\n"
                      "b/n0.dcm,Normal,val\nb/n1.dcm,COVID,test\nb/n2.dcm,Normal,test\n")
    return root, labels


def _stored(map_csv) -> dict[str, str]:
    """original relative path → stored (generated) path, from the pseudonym map written on request."""
    with open(map_csv) as fh:
        return {r["original_path"]: r["stored_path"] for r in csv.DictReader(fh)}


def test_dicom_pixels_luts_and_photometric(dicom_tree, tmp_path):
    root, labels = dicom_tree
    res = I.import_dataset(root, "dicom", "dcm", labels=labels, size=32,
                           dicom={"pseudonym_map": tmp_path / "map.csv"}, user_id=None)
    assert res["report"]["imported"] == 6 and res["report"]["bad"] == []
    name = _stored(tmp_path / "map.csv")
    arr = D.load_arrays(res["dataset_id"])
    row = {name_: i for i, name_ in enumerate(arr.paths)}
    row = {orig: row[st] for orig, st in name.items()}
    m1 = arr.images[row["a/mono1.dcm"]].astype(int)
    # MONOCHROME1: low stored values are white; the window clips the outer quarters
    assert m1[:, 0].min() == 255 and m1[:, -1].max() == 0 and 100 < m1[:, 16].mean() < 160
    assert (np.diff(m1[0]) <= 0).all()
    m2 = arr.images[row["a/mono2.dcm"]].astype(int)
    assert m2[:, 0].max() <= 5 and m2[:, -1].min() >= 250 and (np.diff(m2[0]) >= 0).all()
    lut = arr.images[row["b/lut.dcm"]].astype(int)
    assert lut[:, 16:].min() == 255 and lut[:, 0].max() == 0  # VOI LUT saturates above stored 1000
    img = D.resolve_image(res["dataset_id"], name["a/mono1.dcm"])
    assert img["meta"]["inverted"] == "MONOCHROME1" and img["meta"]["Modality"] == "CR"
    assert img["width"] == 40 and img["height"] == 48 and img["split"] == "train"
    assert D.get_dataset("dcm")["classes"] == ["COVID", "Normal"]


def test_dicom_import_leaves_no_phi(dicom_tree, exemplar_home, tmp_path):
    root, labels = dicom_tree
    res = I.import_dataset(root, "dicom", "dcm", labels=labels, size=32,
                           dicom={"pseudonym_map": tmp_path / "map.csv"}, user_id=None)
    name = _stored(tmp_path / "map.csv")
    deid = res["report"]["deidentification"]
    assert deid["files"] == 6 and deid["removed"]["PatientName"] == 6 and deid["removed"]["PatientID"] == 6
    assert deid["uids_replaced"]["StudyInstanceUID"] == 6 and deid["private_tags_removed"] == 6
    for kw in ("PatientBirthDate", "InstitutionName", "AccessionNumber", "StudyDate", "ReferringPhysicianName"):
        assert deid["removed"][kw] == 6
    stored = db_text()
    secrets = list(PHI.values()) + list(UIDS.values()) + ["1.2.826.0.1.3680043.99.3", "private secret", "Doe",
                                                          "mono1", "mono2", "lut.dcm", "n0.dcm", str(root)]
    for secret in secrets:
        assert secret not in stored, secret
    # nor in any file under EXEMPLAR_HOME (the database file itself, cache, images …): originals never copied
    for f in exemplar_home.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(s.encode() in data for s in secrets), f
            assert f.suffix != ".dcm"
    assert all(v.count("/") == 2 and v.endswith(".png") and v.startswith("P") for v in name.values())
    img = D.resolve_image(res["dataset_id"], name["a/mono1.dcm"])
    assert img["meta"]["StudyInstanceUID"].startswith("2.25.") and img["meta"]["patient"].startswith("P")
    # the same study keeps one new UID within the import (all test files share a study)
    assert len({D.resolve_image(res["dataset_id"], name[p])["meta"]["StudyInstanceUID"]
                for p in ("a/mono1.dcm", "b/n0.dcm")}) == 1


def test_dicom_bad_files_and_labels(dicom_tree, tmp_path):
    root, labels = dicom_tree
    (root / "b" / "fake.dcm").write_text("not dicom")
    make_dicom(root / "c" / "nolabel.dcm", _ramp(), sop_uid="1.2.826.0.1.3680043.99.3.99")
    with open(labels, "a") as fh:
        fh.write("b/fake.dcm,COVID,train\nb/missing.dcm,COVID,train\n")
    with pytest.raises(D.ImportRefused):
        I.import_dataset(root, "dicom", "dcm", labels=labels, size=32, user_id=None)
    res = I.import_dataset(root, "dicom", "dcm", labels=labels, size=32, skip_bad=True, user_id=None)
    # bad files are named by their number in sorted path order, never by their name
    order = sorted(["a/mono1.dcm", "a/mono2.dcm", "b/lut.dcm", "b/n0.dcm", "b/n1.dcm", "b/n2.dcm", "b/fake.dcm",
                    "c/nolabel.dcm", "b/missing.dcm"])
    bad = {b["path"]: b["reason"] for b in res["report"]["bad"]}
    assert "not a DICOM file" in bad[f"file #{order.index('b/fake.dcm') + 1}"]
    assert "no label" in bad[f"file #{order.index('c/nolabel.dcm') + 1}"]
    assert "not found" in bad[f"file #{order.index('b/missing.dcm') + 1}"]
    assert not any(w in str(res["report"]) for w in ("fake", "nolabel", "missing.dcm"))
    assert res["report"]["imported"] == 6
    with pytest.raises(ValueError, match="labels"):
        I.import_dataset(root, "dicom", "dcm2", size=32, user_id=None)


def test_dicom_reimport_idempotent_and_cache_rebuild(dicom_tree):
    root, labels = dicom_tree
    res = I.import_dataset(root, "dicom", "dcm", labels=labels, size=32, user_id=None)
    arr = D.load_arrays(res["dataset_id"])
    again = I.import_dataset(root, "dicom", "dcm", labels=labels, size=32, user_id=None)
    assert again["report"]["unchanged"] == 6 and again["report"]["imported"] == 0
    assert {r["meta"]["patient"] for r in D.list_images(res["dataset_id"])} == {
        r["meta"]["patient"] for r in D.list_images(again["dataset_id"])}  # keyed pseudonyms are stable
    D.cache_path(res["dataset_id"]).unlink()
    assert np.array_equal(D.load_arrays(res["dataset_id"]).images, arr.images)


def test_burned_in_annotation_refused_unless_allowed(tmp_path, exemplar_home):
    root = tmp_path / "dcm"
    for i in range(4):
        make_dicom(root / f"x{i}.dcm", _noise(i), sop_uid=f"1.2.826.0.1.3680043.99.4.{i}",
                   phi={"BurnedInAnnotation": "YES"} if i == 0 else None)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"x{i}.dcm,{'COVID' if i % 2 else 'Normal'}\n" for i in range(4)))
    with pytest.raises(D.ImportRefused, match="burned-in"):
        I.import_dataset(root, "dicom", "d", labels=labels, size=32, user_id=None)
    assert D.list_datasets() == []
    res = I.import_dataset(root, "dicom", "d", labels=labels, size=32, skip_bad=True, user_id=None)
    assert res["report"]["imported"] == 3 and res["report"]["burned_in"] == {"found": 1, "refused": 1, "imported": 0}
    res = I.import_dataset(root, "dicom", "d2", labels=labels, size=32, dicom={"allow_burned_in": True}, user_id=None)
    assert res["report"]["imported"] == 4 and res["report"]["burned_in"]["imported"] == 1


def test_pseudonym_map_never_inside_home_and_splits_grouped_by_patient(tmp_path, exemplar_home):
    root = tmp_path / "dcm"
    rows = ["path,label"]
    for i in range(24):
        make_dicom(root / f"p{i // 3}" / f"{i}.dcm", _noise(i), sop_uid=f"1.2.826.0.1.3680043.99.5.{i}",
                   phi={"PatientID": f"PID-{i // 3}"})
        rows.append(f"p{i // 3}/{i}.dcm,{'COVID' if (i // 3) % 2 else 'Normal'}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="outside EXEMPLAR_HOME"):
        I.import_dataset(root, "dicom", "d", labels=labels, size=32, dicom={"pseudonym_map": exemplar_home / "m.csv"}, user_id=None)
    res = I.import_dataset(root, "dicom", "d", labels=labels, size=32, user_id=None)
    imgs = D.list_images(res["dataset_id"])
    split_of: dict[str, set] = {}
    for im in imgs:
        split_of.setdefault(im["meta"]["patient"], set()).add(im["split"])
    assert len(split_of) == 8 and all(len(v) == 1 for v in split_of.values())
    assert len({s for v in split_of.values() for s in v}) >= 2
    assert "grouped by patient" in res["report"]["splits"]


def test_removal_list_is_made_of_real_dicom_keywords():
    from pydicom.datadict import tag_for_keyword

    from core.data.dicom import REMOVE, REPLACE_UID

    assert [k for k in REMOVE + REPLACE_UID if tag_for_keyword(k) is None] == []
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
               "OtherPatientIDsSequence", "ReferringPhysicianName", "StudyComments", "IconImageSequence"):
        assert kw in REMOVE


def _patients_tree(tmp_path, n_patients: int, per: int = 2, folder: str = "dcm"):
    """n_patients patients of `per` images each (labels alternate by patient), and the labels CSV."""
    root = tmp_path / folder
    rows = ["path,label"]
    for i in range(n_patients * per):
        p = i // per
        make_dicom(root / f"p{p}" / f"{i}.dcm", _noise(i), sop_uid=f"1.2.826.0.1.3680043.99.6.{i}",
                   phi={"PatientID": f"MRN-12345{p}"})
        rows.append(f"p{p}/{i}.dcm,{'COVID' if p % 2 else 'Normal'}")
    labels = root / "labels_Doe_John.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def test_five_patients_give_val_and_test_a_patient_each(tmp_path):
    root, labels = _patients_tree(tmp_path, 5)
    res = I.import_dataset(root, "dicom", "d5", labels=labels, size=32, user_id=None)
    split_of: dict[str, set] = {}
    for im in D.list_images(res["dataset_id"]):
        split_of.setdefault(im["meta"]["patient"], set()).add(im["split"])
    assert len(split_of) == 5 and all(len(v) == 1 for v in split_of.values())  # a patient stays in one split
    held = [next(iter(v)) for v in split_of.values()]
    assert held.count("train") >= 1 and held.count("val") >= 1 and held.count("test") >= 1


def test_spread_moves_whole_patients_only_when_there_are_three():
    from services.data.dicom_import import _spread

    keys = ["a", "a", "b", "c", "c"]
    out = list(_spread(np.array(["train"] * 5), keys, seed=0))
    assert out[0] == out[1] and out[3] == out[4] and {"train", "val", "test"} == set(out)
    assert list(_spread(np.array(["train"] * 3), ["a", "b", "b"], seed=0)) == ["train"] * 3


def test_dicom_job_stores_no_folder_label_or_patient_id(tmp_path, exemplar_home):
    """Faults check § 4: a DICOM root folder named after a patient leaves no trace in any table (jobs.params,
    the audit row job.start, messages, results, the dataset report), and the uploads are gone afterwards."""
    from typer.testing import CliRunner

    from services.cli import app

    root, labels = _patients_tree(tmp_path, 4, folder="Doe_John_MRN-123456_export")
    r = CliRunner().invoke(app, ["data", "import", str(root), "--layout", "dicom", "--labels", str(labels),
                                 "--name", "dcm", "--json"])
    assert r.exit_code == 0, r.output
    stored = db_text()
    for secret in ("Doe_John", "MRN-12345", str(root), "labels_Doe_John", "p0/0.dcm"):
        assert secret not in stored, secret
    assert not [p for p in (exemplar_home / "uploads").iterdir() if p.name.startswith("up-")]
    r = CliRunner().invoke(app, ["jobs", "list", "--json"])
    assert "Doe_John" not in r.output and "MRN-12345" not in r.output and '"upload": "up-' in r.output


def test_a_failed_dicom_job_names_no_path_in_its_error(tmp_path, exemplar_home):
    from services.jobs.lifecycle import run_inline
    from services.team.users import get_or_create_user

    root, labels = _patients_tree(tmp_path, 1, folder="Doe_John_MRN-123456_export")
    labels.write_text("file,class\nx,y\n")  # no path,label columns: the scan's refusal names the CSV
    row = run_inline("data.import", I.import_job_params(root, "dicom", "dcm", labels=labels),
                     get_or_create_user("tester"), echo=False)
    assert row["status"] == "failed" and "[the labels CSV]" in row["error"], row["error"]
    assert "Doe_John" not in db_text()
    assert not [p for p in (exemplar_home / "uploads").iterdir() if p.name.startswith("up-")]


def test_dicom_import_streams_each_image_through_the_shared_spill(tmp_path, monkeypatch):
    """Behaviour, not wall-clock: when a row goes to the RowSpill, at most the image being written is alive (the
    importer keeps no list of decoded images), and the cache is written by core.data.spill.save_npz, the writer
    the PNG path uses."""
    import weakref

    import core.data.dicom as cd
    import core.data.spill as sp

    live: list = []
    peaks: list[int] = []
    saved: list[int] = []
    real_read, real_put, real_save = cd.read_dicom, sp.RowSpill.put, sp.save_npz

    def read(*a, **kw):
        di = real_read(*a, **kw)
        live.append(weakref.ref(di.pixels))
        return di

    def put(self, row, pixels):
        peaks.append(sum(r() is not None for r in live))
        return real_put(self, row, pixels)

    def save(path, small, spill, count):
        saved.append(count)
        return real_save(path, small, spill, count)

    monkeypatch.setattr(cd, "read_dicom", read)
    monkeypatch.setattr(sp.RowSpill, "put", put)
    monkeypatch.setattr(sp, "save_npz", save)
    root, labels = _patients_tree(tmp_path, 6, per=3)
    res = I.import_dataset(root, "dicom", "s", labels=labels, size=32, user_id=None)
    assert res["report"]["imported"] == 18 and len(peaks) == 18 and max(peaks) == 1
    assert saved == [18] and len(D.load_arrays(res["dataset_id"])) == 18


def test_dicom_import_uses_only_public_names_of_services_datasets():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(D.__file__).with_name("dicom_import.py").read_text())
    private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "services.data.datasets"
               for a in n.names if a.name.startswith("_")]
    assert private == []


def test_non_utf8_dicom_name_is_numbered_and_skipped(tmp_path):
    import os

    root, labels = _patients_tree(tmp_path, 3)
    odd = os.path.join(os.fsencode(root), b"p0", b"Doe\xff.dcm")
    with open(odd, "wb") as fh:
        fh.write((root / "p0" / "0.dcm").read_bytes())
    with pytest.raises(D.ImportRefused, match="not valid UTF-8"):
        I.import_dataset(root, "dicom", "u", labels=labels, size=32, user_id=None)
    res = I.import_dataset(root, "dicom", "u", labels=labels, size=32, skip_bad=True, user_id=None)
    assert res["report"]["bad_count"] == 1 and res["report"]["bad"][0]["path"].startswith("file #")
    assert "Doe" not in str(res["report"]) and res["report"]["imported"] == 6
