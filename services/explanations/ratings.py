"""Every rating in one table: explanation-quality annotations (gallery) and counterfactual ratings (realism,
plausibility), with who, when, model, method and image; for the Annotations page and the annotations export."""
from __future__ import annotations

from sqlalchemy import select

from db.models import Annotation, Counterfactual, ExplanationRun, Image, User
from services.platform.database import read_session

KINDS = ("explanation", "counterfactual")
COLUMNS = ["id", "kind", "created_at", "user", "model_id", "method", "image_id", "path", "run_id",
           "counterfactual_id", "quality", "rating", "plausible", "comment"]


def list_ratings(kind: str | None = None, user_id: int | None = None, model_id: int | None = None,
                 method: str | None = None, limit: int | None = 5000) -> list[dict]:
    """Ratings newest first, filtered by kind (explanation | counterfactual), user, model and method."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    method_col = ExplanationRun.method if kind == "explanation" else Counterfactual.method
    with read_session() as s:
        q = (select(Annotation, User.name, Image.path, ExplanationRun.method, Counterfactual.method)
             .join(User, User.id == Annotation.user_id)
             .outerjoin(Image, Image.id == Annotation.image_id)
             .outerjoin(ExplanationRun, ExplanationRun.id == Annotation.run_id)
             .outerjoin(Counterfactual, Counterfactual.id == Annotation.counterfactual_id)
             .order_by(Annotation.id.desc()))
        if kind is not None:
            q = q.where(Annotation.subject == kind)
        if user_id is not None:
            q = q.where(Annotation.user_id == int(user_id))
        if model_id is not None:
            q = q.where(Annotation.model_id == int(model_id))
        if method:
            q = q.where((ExplanationRun.method == method) | (Counterfactual.method == method)) if kind is None \
                else q.where(method_col == method)
        if limit:
            q = q.limit(int(limit))
        return [{"id": a.id, "kind": a.subject, "created_at": a.created_at.isoformat()[:19] if a.created_at else None,
                 "user": name, "model_id": a.model_id, "method": run_m or cf_m, "image_id": a.image_id, "path": path,
                 "run_id": a.run_id, "counterfactual_id": a.counterfactual_id, "quality": a.quality,
                 "rating": a.rating, "plausible": a.plausible, "comment": a.comment or ""}
                for a, name, path, run_m, cf_m in s.execute(q)]


def rating_methods() -> list[str]:
    """Methods that have at least one rating (explanation runs' and counterfactuals')."""
    with read_session() as s:
        a = s.scalars(select(ExplanationRun.method).join(Annotation, Annotation.run_id == ExplanationRun.id)
                      .distinct()).all()
        b = s.scalars(select(Counterfactual.method).join(Annotation, Annotation.counterfactual_id == Counterfactual.id)
                      .distinct()).all()
        return sorted(set(a) | set(b))
