"""Importing a dataset, the entry point for every layout: `import_dataset` sends DICOM to dicom_import.py and the rest
to datasets.py; the `data.import` job names its source by upload ids (services/platform/uploads.py), never by path,
and its messages never name one (docs/architecture.md, Data import)."""
from __future__ import annotations

import os
from pathlib import Path

from core.data.checks import MAX_PIXELS
from services.data.datasets import ImportRefused, Progress, import_folder
from services.data.dicom_import import import_dicom
from services.jobs.lifecycle import JobLost, JobReleased
from services.platform import uploads


def import_dataset(path: str | Path, layout: str, name: str, skip_bad: bool = False, labels: str | Path | None = None,
                   size: int | None = None, seed: int = 0, *, user_id: int | None, progress: Progress | None = None,
                   max_pixels: int = MAX_PIXELS, uploaded: bool = False, meta: dict | None = None,
                   dicom: dict | None = None) -> dict:
    """Import (or re-import, idempotently) a tree or zip; returns {dataset_id, name, root, counts, report, created}.

    size None (the default) keeps the images' native size (the first image's longer side, within
    MIN_IMPORT_SIZE..MAX_IMPORT_SIZE); images of another size are resized to it and counted in the report.
    Raises ImportRefused (nothing written) when bad files are found and skip_bad is False.
    DICOM goes through services.data.dicom_import (generated names, no PHI); dicom = its extra options.
    """
    if layout == "dicom":
        return import_dicom(path, name, labels, skip_bad=skip_bad, size=size, seed=seed, user_id=user_id,
                            progress=progress, max_pixels=max_pixels, meta=meta, uploaded=uploaded, **(dicom or {}))
    return import_folder(path, layout, name, skip_bad=skip_bad, labels=labels, size=size, seed=seed, user_id=user_id,
                         progress=progress, max_pixels=max_pixels, uploaded=uploaded, meta=meta)


def import_job_params(path: str | Path, layout: str, name: str, labels: str | Path | None = None,
                      pseudonym_map: str | Path | None = None, owned: bool = False, **options) -> dict:
    """The `data.import` job's params, for the CLI and the Datasets page: the source (and the labels CSV and the
    pseudonym map's target) registered under generated upload ids (services/platform/uploads.py), so that no server path
    or file name reaches the jobs row, its audit row or the Jobs page (docs/architecture.md, Data import).
    options: skip_bad, size, seed, allow_burned_in. owned: the source is a zip Exemplar stored (a browser upload).
    Undo with services.platform.uploads.discard_import when the job could not be made."""
    params = {"upload": uploads.register(path, owned=owned), "layout": layout, "name": name, **options}
    if labels:
        params["labels_upload"] = uploads.register(labels)
    if pseudonym_map:
        params["map_upload"] = uploads.register(pseudonym_map)
    return params


def _chain(exc: BaseException):
    """exc and the exceptions it was raised from or during (what a stored traceback shows)."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def _without_paths(exc: BaseException, paths: dict[str, str], dicom: bool) -> BaseException:
    """exc with every registered path in its message replaced by what it is ("[the source folder]", …), and no
    chained exception that names one: a job's error and traceback are stored on its row. A dicom message that
    still names a file inside the source is replaced as a whole (file names there may identify a patient).
    Returns exc itself when nothing in its chain names a path."""
    if not any(p in str(e) for e in _chain(exc) for p in paths):
        return exc
    clean = str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    for p, what in sorted(paths.items(), key=lambda kv: len(kv[0]), reverse=True):
        clean = clean.replace(p + os.sep, what + "/").replace(p, what)
    if dicom and any(f"{what}/" in clean for what in paths.values()):
        clean = (f"{type(exc).__name__} about a file in the DICOM source (its name is not shown: it may identify "
                 "a patient)")
    if isinstance(exc, ImportRefused):
        exc.args = (clean,)
        exc.__cause__, exc.__suppress_context__ = None, True
        return exc
    try:
        return type(exc)(clean)
    except Exception:  # an exception class that wants other arguments
        return RuntimeError(clean)


def _resolved_uploads(p: dict) -> tuple[dict, dict[str, str]]:
    """{param key: server path} of the job's uploads and {path text: what it is} for scrubbing messages."""
    if p.get("path") or p.get("labels") or p.get("pseudonym_map"):
        raise ValueError("this import job names a server path in its parameters (queued by an older version): "
                         "start the import again")
    got, names = {}, {}
    for key, what in uploads.IMPORT_KEYS.items():
        if p.get(key):
            got[key] = uploads.resolve(p[key])
            for form in (got[key], got[key].expanduser().resolve()):
                names[str(form)] = what
    if "upload" not in got:
        raise ValueError("the import job names no upload: start the import again")
    return got, names


def import_job(ctx) -> dict:
    """`data.import` job: params upload (an upload id, services/platform/uploads.py), layout, name, skip_bad,
    labels_upload, size, seed, and for dicom allow_burned_in and map_upload. Its uploads are removed once the
    import has ended for good (succeeded, failed, refused, cancelled) and kept for a retry of a lost or released
    attempt. The result names the dataset, never the source folder."""
    p = ctx.params
    final = True
    try:
        got, names = _resolved_uploads(p)
        dicom = {"allow_burned_in": bool(p.get("allow_burned_in", False)), "pseudonym_map": got.get("map_upload")}
        try:
            res = import_dataset(got["upload"], p.get("layout", "covid-radiography"), p["name"],
                                 skip_bad=bool(p.get("skip_bad", False)), labels=got.get("labels_upload"),
                                 size=int(p["size"]) if p.get("size") else None, seed=int(p.get("seed", 0)),
                                 user_id=ctx.user_id, progress=ctx.progress,
                                 dicom=dicom if p.get("layout") == "dicom" else None)
        except (JobLost, JobReleased):
            raise
        except Exception as exc:
            clean = _without_paths(exc, names, p.get("layout") == "dicom")
            if clean is exc:
                raise
            raise clean from None
        return {k: v for k, v in res.items() if k != "root"}
    except (JobLost, JobReleased):
        final = False
        raise
    finally:
        if final:
            uploads.discard_import(p)
