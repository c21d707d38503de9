"""Uploads: a server path (a dataset folder or .zip, a labels CSV, a pseudonym-map target) registered under a
generated id, so that a job's parameters, its audit row, its messages and its result name the upload, never the
path or a file name: a folder named after a patient leaves no trace in the database (docs/architecture.md, Data
import).

The pointer is a small file outside the database, `$EXEMPLAR_HOME/uploads/<id>` (mode 0600; the path is stored
hex-encoded, relative when it lies inside EXEMPLAR_HOME so that several hosts may mount the home at other places).
The import job removes its pointers once the import has ended for good and keeps them for a retry; a pointer left
by a job that never ended is swept after MAX_AGE_S. An *owned* upload (a zip the browser sent, stored under
uploads/) is deleted with its pointer.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from services.platform.settings import from_stored, get_settings, to_stored

ID_RE = re.compile(r"up-[0-9a-f]{32}")
MAX_AGE_S = 14 * 24 * 3600  # a pointer no job removed goes after two weeks (a lost import with no retry left
# releases its pointers at once: services.jobs.reaper.release_uploads_if_final)


def _dir() -> Path:
    return get_settings().path("uploads")


def _pointer(upload_id: str) -> Path:
    if not isinstance(upload_id, str) or not ID_RE.fullmatch(upload_id):
        raise ValueError(f"{str(upload_id)[:40]!r} is not an upload id (up- and 32 hex digits)")
    return _dir() / upload_id


def register(path: str | Path, owned: bool = False) -> str:
    """Register a server path under a new id and return the id (the path itself is not checked here: the
    caller refused a missing one already, in one line, before any job row was made)."""
    sweep()
    upload_id = f"up-{uuid.uuid4().hex}"
    p = Path(path).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    body = json.dumps({"path_hex": os.fsencode(str(to_stored(p))).hex(), "owned": bool(owned)})
    fd = os.open(_pointer(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    return upload_id


def _read(upload_id: str) -> dict:
    p = _pointer(upload_id)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"upload {upload_id} is no longer registered (its import ended, or it was removed): "
                         "start the import again") from None
    except (OSError, ValueError):
        raise ValueError(f"upload {upload_id} cannot be read: start the import again") from None


def resolve(upload_id: str) -> Path:
    """The server path registered under the id; ValueError (one line, naming only the id) when there is none."""
    return Path(from_stored(os.fsdecode(bytes.fromhex(_read(upload_id)["path_hex"]))))


def is_owned(upload_id: str) -> bool:
    """Whether the upload is a file Exemplar stored (a browser upload), deleted with its pointer."""
    return bool(_read(upload_id).get("owned"))


def discard(upload_id: str | None) -> None:
    """Remove the pointer (and an owned upload's file, when it lies under uploads/); nothing when already gone."""
    if not upload_id:
        return
    try:
        target, owned = resolve(upload_id), is_owned(upload_id)
    except ValueError:
        target, owned = None, False
    if owned and target is not None:
        _remove_owned(target)
    _pointer(upload_id).unlink(missing_ok=True)


def _remove_owned(target: Path) -> None:
    """Delete an owned upload, only ever inside the uploads folder."""
    root = _dir().resolve()
    t = target.resolve()
    if t == root or root not in t.parents:
        return
    if t.is_dir():
        shutil.rmtree(t, ignore_errors=True)
    else:
        t.unlink(missing_ok=True)


def sweep(max_age_s: float = MAX_AGE_S) -> int:
    """Remove pointers older than max_age_s (left by jobs that were lost for good); returns how many went."""
    cutoff, n = time.time() - max_age_s, 0
    for p in _dir().iterdir():
        if ID_RE.fullmatch(p.name) and p.is_file():
            try:
                old = p.stat().st_mtime < cutoff
            except OSError:
                continue
            if old:
                discard(p.name)
                n += 1
    return n


IMPORT_KEYS = {"upload": "[the source folder]", "labels_upload": "[the labels CSV]",
               "map_upload": "[the pseudonym map]"}  # upload id param → what a job's messages say instead of its path


def discard_import(params: dict) -> None:
    """Remove the uploads named by an import's params (the job ended for good, or was never made)."""
    for key in IMPORT_KEYS:
        discard(params.get(key))
