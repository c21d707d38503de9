"""A zip is refused before its import is queued (issue 25): not a zip, cut short, damaged inside (CRC), holding no
image, or larger than the free disk; one plain line that names the zip as shown and no file inside it."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data.layouts import check_zip
from services.data.datasets import check_import_source
from services.jobs.lifecycle import list_jobs
from services.team.users import get_or_create_user

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "data_models.py")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def good_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for c in ("COVID", "Normal"):
            for i in range(3):
                zf.writestr(f"ds/{c}/images/{c}-{i}.png", _png())
    return path


def test_a_good_zip_passes(tmp_path):
    z = good_zip(tmp_path / "ok.zip")
    check_zip(z, "ok.zip")
    assert check_import_source(z, "covid-radiography") == z


@pytest.mark.parametrize("damage, words", [
    (lambda b: b"not a zip at all", "is not a readable zip"),
    (lambda b: b[: len(b) // 2], "is not a readable zip"),  # cut short: the central directory is gone
    (lambda b: _flip_inside(b), "is damaged"),  # the directory reads, a file inside does not
])
def test_a_bad_zip_is_refused_in_one_line(tmp_path, damage, words):
    z = good_zip(tmp_path / "src.zip")
    bad = tmp_path / "patient-jones.zip"
    bad.write_bytes(damage(z.read_bytes()))
    with pytest.raises(ValueError) as exc:
        check_import_source(bad, "covid-radiography", shown="the uploaded zip scans.zip")
    msg = str(exc.value)
    assert words in msg and msg.startswith("the uploaded zip scans.zip") and "\n" not in msg
    assert "jones" not in msg and "COVID-" not in msg  # names neither the stored path nor a file inside


def _flip_inside(b: bytes) -> bytes:
    """Flip bytes in the first entry's compressed data (after its local header), leaving the directory intact."""
    i = b.index(b"PK\x03\x04") + 30 + len("ds/COVID/images/COVID-0.png") + 40
    return b[:i] + bytes(x ^ 0xFF for x in b[i:i + 16]) + b[i + 16:]


def test_a_zip_without_images_or_beyond_the_free_disk_is_refused(tmp_path):
    z = tmp_path / "notes.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="holds no PNG, JPEG or DICOM image"):
        check_zip(z, "notes.zip")
    with pytest.raises(ValueError, match="GiB are free on the server"):
        check_zip(good_zip(tmp_path / "ok.zip"), "ok.zip", free_bytes=10)


def test_the_import_form_refuses_a_damaged_zip_and_queues_nothing(tmp_path):
    get_or_create_user("tester")
    bad = tmp_path / "cut.zip"
    bad.write_bytes(good_zip(tmp_path / "src.zip").read_bytes()[:200])
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["user"] = {"id": 1, "name": "tester"}
    at.run()
    at.text_input(key="ds_imp_name").set_value("scans")
    at.text_input(key="ds_imp_path").set_value(str(bad))
    at.button(key="ds_imp_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("is not a readable zip" in e.value for e in at.error)
    assert list_jobs() == []
