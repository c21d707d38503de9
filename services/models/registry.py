"""Model registry: checkpoints under $EXEMPLAR_HOME/models/<uuid>/ and their `models` rows.

A checkpoint is written into a hidden temp folder, renamed into place once complete, and only then is the
row inserted: a cancelled, failed or killed run leaves no row pointing at a missing or partial checkpoint
(a killed run may leave a `.tmp-*` folder, which prune_partial() removes).
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.models import Model
from services.models.config_schema import check_config
from services.platform.database import read_session, session
from services.team import audit
from services.platform.settings import from_stored, get_settings, to_stored, resolve_device

CHECKPOINT_NAME = "model.safetensors"
TMP_PREFIX = ".tmp-"


def models_root() -> Path:
    return get_settings().path("models")


def model_dir(key: int | str) -> Path:
    """The checkpoint folder of a model: a registry id (resolved through its row) or a folder name (uuid)."""
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        row = get_model(int(key))
        if row is None:
            raise KeyError(f"no model {key}")
        return Path(row["checkpoint"]).parent
    if not key or "/" in key or "\\" in key or key.startswith("."):
        raise ValueError(f"bad model folder name {key!r}")
    return models_root() / key


def _complete(checkpoint: Path) -> bool:
    return checkpoint.is_file() and checkpoint.with_suffix(".json").is_file()


def save_checkpoint_dir(model: Any, config: dict, extra_files: dict[str, bytes] | None = None) -> Path:
    """Write model.safetensors + model.json (and extra files) into a temp folder, rename it to models/<uuid>/.

    Returns the final checkpoint path. On any exception the temp folder is removed and nothing is left.
    """
    from core.models.checkpoint import save_checkpoint

    root = models_root()
    name = uuid.uuid4().hex
    tmp = root / f"{TMP_PREFIX}{name}"
    tmp.mkdir(parents=True)
    try:
        save_checkpoint(model, config, tmp / CHECKPOINT_NAME)
        for fname, data in (extra_files or {}).items():
            (tmp / fname).write_bytes(data)
        final = root / name
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / CHECKPOINT_NAME


def register_model(*, name: str, arch: str, checkpoint: str | Path, kind: str = "classifier",
                   dataset_id: int | None = None, parent_id: int | None = None, target_model_id: int | None = None,
                   config: dict | None = None, metrics: dict | None = None, feedback_ids: list | None = None,
                   job_id: int | None = None, created_by: int | None = None) -> int:
    """Insert a registry row for a complete checkpoint (safetensors + JSON beside it); returns the model id.

    Refuses (FileNotFoundError) a checkpoint whose weights or JSON config are missing.
    """
    check_config(kind, config)  # the retrain sub-objects match their schema before anything is written
    ckpt = Path(checkpoint).resolve()
    if ckpt.is_dir():
        ckpt = ckpt / CHECKPOINT_NAME
    if not _complete(ckpt):
        raise FileNotFoundError(f"checkpoint {ckpt} is incomplete (weights or JSON config missing); not registered")
    with session() as s:
        row = Model(name=name, kind=kind, arch=arch, dataset_id=dataset_id, parent_id=parent_id,
                    target_model_id=target_model_id, checkpoint=to_stored(ckpt), config=config or {},
                    metrics=metrics or {}, feedback_ids=feedback_ids or [], job_id=job_id, created_by=created_by)
        s.add(row)
        s.flush()
        audit.add(s, created_by, "model.register", f"model:{row.id}", after={"name": name, "kind": kind, "arch": arch, "job_id": job_id})
        return row.id


def model_to_dict(m: Model) -> dict:
    return {"id": m.id, "name": m.name, "kind": m.kind, "arch": m.arch, "dataset_id": m.dataset_id,
            "parent_id": m.parent_id, "target_model_id": m.target_model_id, "checkpoint": from_stored(m.checkpoint),
            "config": m.config or {}, "metrics": m.metrics or {}, "feedback_ids": m.feedback_ids or [],
            "job_id": m.job_id, "created_by": m.created_by,
            "created_at": m.created_at.isoformat() if m.created_at else None}


def get_model(model_id: int) -> dict | None:
    with read_session() as s:
        m = s.get(Model, int(model_id))
        return model_to_dict(m) if m else None


def classifier_with_dataset(model_id: int, why: str = "") -> dict:
    """The registry row of a classifier that has a dataset (what explaining, evaluating, retraining and LTX need);
    anything else is refused in one line, `why` appended to say what needed it."""
    row = get_model(int(model_id))
    if row is None:
        raise ValueError(f"no model {model_id}")
    if row["kind"] != "classifier":
        raise ValueError(f"model {model_id} is a {row['kind']}, not a classifier{why}")
    if not row["dataset_id"]:
        raise ValueError(f"model {model_id} has no dataset{why}")
    return row


def find_model(name: str, kind: str | None = "classifier", dataset_id: int | None = None) -> dict | None:
    """The newest model with this name (and kind / dataset when given), or None."""
    with read_session() as s:
        q = select(Model).where(Model.name == name).order_by(Model.id.desc())
        if kind:
            q = q.where(Model.kind == kind)
        if dataset_id is not None:
            q = q.where(Model.dataset_id == dataset_id)
        m = s.scalars(q).first()
        return model_to_dict(m) if m else None


def update_metrics(model_id: int, metrics: dict) -> None:
    """Merge metrics into a model's row (e.g. a later evaluation of another split)."""
    with session() as s:
        m = s.get(Model, int(model_id))
        if m is None:
            raise KeyError(f"no model {model_id}")
        m.metrics = {**(m.metrics or {}), **metrics}


def lineage(model_id: int) -> list[int]:
    """Ancestor ids from the root to this model (parent_id chain; cycles cut)."""
    chain: list[int] = []
    cur: int | None = int(model_id)
    with read_session() as s:
        while cur is not None and cur not in chain:
            chain.append(cur)
            m = s.get(Model, cur)
            cur = m.parent_id if m else None
    return chain[::-1]


def load_classifier(model_id: int, device: str | None = None):
    """(torch module in eval mode on the device, registry row) for a classifier id."""
    from core.models.checkpoint import load_checkpoint

    row = get_model(model_id)
    if row is None:
        raise KeyError(f"no model {model_id}")
    if row["kind"] != "classifier":
        raise ValueError(f"model {model_id} is a {row['kind']}, not a classifier")
    model, _cfg = load_checkpoint(row["checkpoint"], device=resolve_device(device))
    return model, row


def prune_partial(older_than_s: float = 3600.0) -> int:
    """Remove temp checkpoint folders left by killed runs (older than older_than_s); returns how many."""
    n, now = 0, time.time()
    for p in models_root().glob(f"{TMP_PREFIX}*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        except FileNotFoundError:
            continue
    return n
