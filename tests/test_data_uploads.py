"""services.platform.uploads and the `data.import` handler's use of it: a job names its source by an upload id; the pointer
is removed once the import has ended for good and kept for a retry of a lost attempt."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from services.data import importing as I
from services.platform import uploads
from tests.helpers_data import small_tree

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "data_models.py")


class _Ctx:
    """What import_job reads from a JobContext; `fail_at` raises the given exception at that progress call."""

    def __init__(self, params, fail_at=None, exc=None):
        self.params, self.user_id, self.calls, self.fail_at, self.exc = params, None, 0, fail_at, exc

    def progress(self, f, msg="", **kw):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise self.exc


def _pointers(home):
    folder = home / "uploads"
    return sorted(p.name for p in folder.iterdir() if uploads.ID_RE.fullmatch(p.name)) if folder.exists() else []


def test_register_resolve_discard(tmp_path, exemplar_home):
    src = tmp_path / "Doe_John"
    src.mkdir()
    uid = uploads.register(src)
    assert uploads.ID_RE.fullmatch(uid) and uploads.resolve(uid) == src and not uploads.is_owned(uid)
    assert b"Doe_John" not in (exemplar_home / "uploads" / uid).read_bytes()  # hex, not plain text
    assert oct((exemplar_home / "uploads" / uid).stat().st_mode & 0o777) == "0o600"
    uploads.discard(uid)
    assert src.is_dir() and _pointers(exemplar_home) == []  # a registered folder is never deleted
    with pytest.raises(ValueError, match="no longer registered"):
        uploads.resolve(uid)
    with pytest.raises(ValueError, match="not an upload id"):
        uploads.resolve("../exemplar.db")


def test_owned_upload_goes_with_its_pointer_only_inside_uploads(tmp_path, exemplar_home):
    inside = uploads._dir() / "upload-x.zip"
    inside.write_bytes(b"zip")
    outside = tmp_path / "mine.zip"
    outside.write_bytes(b"zip")
    a, b = uploads.register(inside, owned=True), uploads.register(outside, owned=True)
    uploads.discard(a)
    uploads.discard(b)
    assert not inside.exists() and outside.exists()


def test_sweep_removes_old_pointers_only(tmp_path, exemplar_home):
    old, new = uploads.register(tmp_path), uploads.register(tmp_path)
    t = time.time() - uploads.MAX_AGE_S - 60
    os.utime(exemplar_home / "uploads" / old, (t, t))
    assert uploads.sweep() == 1 and _pointers(exemplar_home) == [new]


def test_import_job_removes_its_uploads_when_done_and_keeps_them_for_a_retry(tmp_path, exemplar_home):
    from services.jobs.lifecycle import JobCancelled, JobLost

    root = tmp_path / "tree"
    small_tree(root, n=16, size=32)
    params = I.import_job_params(root, "covid-radiography", "t", size=32)
    assert "path" not in params and str(root) not in str(params)
    with pytest.raises(JobLost):
        I.import_job(_Ctx(params, fail_at=2, exc=JobLost("lost")))
    assert _pointers(exemplar_home) == [params["upload"]]  # kept: the reaper may retry the job
    res = I.import_job(_Ctx(params))  # the retry
    assert res["report"]["imported"] == 16 and "root" not in res and _pointers(exemplar_home) == []
    params = I.import_job_params(root, "covid-radiography", "t2", size=32)
    with pytest.raises(JobCancelled):
        I.import_job(_Ctx(params, fail_at=2, exc=JobCancelled("cancelled by user")))
    assert _pointers(exemplar_home) == []


def test_import_job_error_names_no_path_and_old_params_are_refused(tmp_path, exemplar_home):
    missing = tmp_path / "Doe_John_gone"
    missing.mkdir()
    params = I.import_job_params(missing, "imagefolder", "t")
    missing.rmdir()
    with pytest.raises(FileNotFoundError) as exc:
        I.import_job(_Ctx(params))
    assert "Doe_John" not in str(exc.value) and "[the source folder]" in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert _pointers(exemplar_home) == []
    with pytest.raises(ValueError, match="start the import again"):
        I.import_job(_Ctx({"path": str(tmp_path), "layout": "imagefolder", "name": "t"}))


def test_import_page_submits_upload_ids(tmp_path, exemplar_home):
    from streamlit.testing.v1 import AppTest

    from services.jobs.lifecycle import list_jobs
    from services.team.users import get_or_create_user

    root = tmp_path / "Doe_John"
    small_tree(root, n=16, size=32)
    get_or_create_user("tester")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["user"] = {"id": 1, "name": "tester"}
    at.run()
    at.text_input(key="ds_imp_path").set_value(str(root))
    at.text_input(key="ds_imp_name").set_value("fromui")
    at.button(key="ds_imp_go").click().run()
    assert not at.exception
    job = list_jobs()[0]
    assert job["kind"] == "data.import" and "Doe_John" not in str(job["params"])
    assert uploads.resolve(job["params"]["upload"]) == root
