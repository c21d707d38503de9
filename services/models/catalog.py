"""Read-only listings for pickers: datasets and registered models (used by the sidebar and the CLI)."""
from __future__ import annotations

from sqlalchemy import select

from db.models import Dataset, ExplanationRun, Model
from services.platform.database import read_session
from services.platform.settings import from_stored  # i17: paths relative to EXEMPLAR_HOME


def list_datasets() -> list[dict]:
    with read_session() as s:
        return [{"id": d.id, "name": d.name, "root": from_stored(d.root), "layout": d.layout, "classes": d.classes,
                 "counts": d.counts, "image_size": d.image_size, "created_at": d.created_at.isoformat()}
                for d in s.scalars(select(Dataset).order_by(Dataset.id))]


def list_models(kind: str | None = "classifier", dataset_id: int | None = None) -> list[dict]:
    with read_session() as s:
        q = select(Model).order_by(Model.id)
        if kind:
            q = q.where(Model.kind == kind)
        if dataset_id is not None:
            q = q.where(Model.dataset_id == dataset_id)
        explained = set(s.scalars(select(ExplanationRun.model_id).distinct()))  # one query: the sidebar's default
        return [{"id": m.id, "name": m.name, "kind": m.kind, "arch": m.arch, "dataset_id": m.dataset_id,
                 "parent_id": m.parent_id, "target_model_id": m.target_model_id, "metrics": m.metrics,
                 "config": m.config, "checkpoint": from_stored(m.checkpoint), "created_at": m.created_at.isoformat(),
                 "has_run": m.id in explained}
                for m in s.scalars(q)]
