"""What a job wrote, keyed by its job id, and how a retry starts clean (docs/architecture.md, "Jobs").

A worker may die after a handler registered its results and before the job row turned `succeeded`. The retry
then first removes what the earlier attempt left under the same job id (models with their checkpoints, retrain
groups, explanation runs, counterfactuals, a dataset the job created), so results are never duplicated.
"""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select

from db.models import Counterfactual, Dataset, ExplanationRun, Job, Model, Retrain
from services.platform.database import session
from services.platform.job_kinds import JOB_KINDS
from services.platform.settings import from_stored, get_settings

DATASET_KINDS = tuple(JOB_KINDS.names(writes_dataset=True))


def _first_start(job: Job) -> datetime | None:
    starts = [h.get("started_at") for h in (job.history or []) if h.get("started_at")]
    return datetime.fromisoformat(min(starts)) if starts else None


def _inside_home(path: str | None) -> Path | None:
    """The file or folder a stored path names, when it lies inside EXEMPLAR_HOME (never touch anything else)."""
    if not path:
        return None
    p = Path(from_stored(path)).resolve()
    home = get_settings().home_dir.resolve()
    return p if p != home and home in p.parents else None


def clear_outputs(job_id: int) -> dict[str, int]:
    """Remove the rows (and files inside EXEMPLAR_HOME) an earlier attempt of this job wrote; returns counts."""
    files: list[Path] = []
    with session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return {}
        models = s.scalars(select(Model).where(Model.job_id == job_id)).all()
        files += [p for p in (_inside_home(m.checkpoint) for m in models) if p]
        out = {
            "retrains": s.execute(delete(Retrain).where(Retrain.job_id == job_id)).rowcount,
            "counterfactuals": s.execute(delete(Counterfactual).where(Counterfactual.job_id == job_id)).rowcount,
            "runs": s.execute(delete(ExplanationRun).where(ExplanationRun.job_id == job_id)).rowcount,
            "models": s.execute(delete(Model).where(Model.job_id == job_id)).rowcount,
            "datasets": 0,
        }
        first = _first_start(job)
        name = (job.params or {}).get("name")
        if job.kind in DATASET_KINDS and name and first is not None:
            ds = s.scalars(select(Dataset).where(Dataset.name == name, Dataset.created_at >= first)).first()
            if ds is not None and ds.created_by == job.created_by:
                files += [p for p in (_inside_home(ds.root),) if p]
                s.delete(ds)
                out["datasets"] = 1
    for p in files:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return out
