"""Exemplar picks (good / bad) and explanation-quality annotations, every one stored with user, time, model,
run and image.

Picks are never deleted: undo sets `undone_at`, so the history stays. A user's current pair for a model is
their newest good and newest bad pick that are not undone (undoing a pick brings back the one before it).
Picking as good the image that is the current bad (or the reverse) undoes that other pick first.
"""
from __future__ import annotations

from sqlalchemy import select

from db.models import Annotation, Explanation, ExplanationRun, Feedback, Image, Model, User, utcnow
from services.platform.database import read_session, session
from services.team import audit
from services.team.access import require
from core.data.roles import exemplar_refusal
from services.explanations.explaining import query_explanations, run_splits

KINDS = ("good", "bad")
QUALITIES = ("good", "bad", "unsure")
MAX_COMMENT = 5000


def _pick_dict(s, f: Feedback) -> dict:
    im = s.get(Image, f.image_id)
    u = s.get(User, f.user_id)
    d = {"id": f.id, "kind": f.kind, "user_id": f.user_id, "user": u.name if u else None, "model_id": f.model_id,
         "run_id": f.run_id, "image_id": f.image_id, "path": im.path if im else None,
         "label": im.label if im else None, "split": im.split if im else None,
         "image_index": im.index if im else None, "dataset_id": im.dataset_id if im else None,
         "created_at": f.created_at.isoformat() if f.created_at else None,
         "undone_at": f.undone_at.isoformat() if f.undone_at else None}
    e = None
    if f.run_id is not None:
        e = s.scalars(select(Explanation).where(Explanation.run_id == f.run_id,
                                                Explanation.image_id == f.image_id)).first()
    for k in ("ar", "ap", "pred", "prob", "index"):
        d[k if k != "index" else "map_index"] = getattr(e, k) if e is not None else None
    return d


def _current(s, model_id: int, user_id: int | None, kind: str) -> Feedback | None:
    q = (select(Feedback).where(Feedback.model_id == int(model_id), Feedback.kind == kind,
                                Feedback.undone_at.is_(None)).order_by(Feedback.id.desc()).limit(1))
    if user_id is not None:
        q = q.where(Feedback.user_id == int(user_id))
    return s.scalars(q).first()


def pick(user_id: int, model_id: int, image_id: int, kind: str, run_id: int | None = None) -> dict:
    """Mark an image as the good or bad exemplar for a model; returns the new pick."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'good' or 'bad', not {kind!r}")
    if user_id is None:
        raise ValueError("a pick needs a user")
    actor = require(user_id, "pick")  # team
    with session() as s:
        if s.get(User, int(user_id)) is None:
            raise ValueError(f"no user {user_id}")
        if s.get(Model, int(model_id)) is None:
            raise ValueError(f"no model {model_id}")
        img = s.get(Image, int(image_id))
        if img is None:
            raise ValueError(f"no image {image_id}")
        why = exemplar_refusal(kind, img.split, img.path.rsplit("/", 1)[-1])
        if why:  # refused at the card, not later on the Retrain page (docs/architecture.md, Split roles)
            raise ValueError(why[0].upper() + why[1:] + ".")
        if run_id is not None and s.get(ExplanationRun, int(run_id)) is None:
            raise ValueError(f"no explanation run {run_id}")
        now = utcnow()
        other = _current(s, model_id, user_id, "bad" if kind == "good" else "good")
        if other is not None and other.image_id == int(image_id):
            other.undone_at = now  # the same instant as the new pick: undoing the new pick brings this one back
        f = Feedback(user_id=int(user_id), model_id=int(model_id), run_id=int(run_id) if run_id is not None else None,
                     image_id=int(image_id), kind=kind, created_at=now)
        s.add(f)
        s.flush()
        audit.add(s, actor, "pick", f"image:{image_id}", after={"feedback_id": f.id, "kind": kind, "model_id": model_id})
        return _pick_dict(s, f)


def undo(user_id: int, model_id: int, feedback_id: int | None = None) -> dict | None:
    """Undo one pick (default: the user's newest live pick for the model); returns it, or None if none is left."""
    actor = require(user_id, "pick")  # team
    with session() as s:
        if feedback_id is not None:
            f = s.get(Feedback, int(feedback_id))
            if f is None or f.user_id != int(user_id) or f.model_id != int(model_id):
                raise ValueError(f"no pick {feedback_id} of this user for model {model_id}")
        else:
            f = s.scalars(select(Feedback).where(Feedback.user_id == int(user_id), Feedback.model_id == int(model_id),
                                                 Feedback.undone_at.is_(None))
                          .order_by(Feedback.id.desc()).limit(1)).first()
        if f is None:
            return None
        if f.undone_at is None:
            f.undone_at = utcnow()
            back = _restore_superseded(s, f)
            audit.add(s, actor, "pick.undo", f"image:{f.image_id}", before={"feedback_id": f.id, "kind": f.kind},
                      after={"restored_feedback_id": back.id, "kind": back.kind} if back is not None else None)
        return _pick_dict(s, f)


def _restore_superseded(s, f: Feedback) -> Feedback | None:
    """Undoing a pick that turned the user's good image into the bad one (or back) makes the earlier pick of that
    image live again: G then B then U leaves the image good, as before B. The earlier pick was closed at the very
    instant the undone one was made (pick() writes both)."""
    prev = s.scalars(select(Feedback).where(
        Feedback.user_id == f.user_id, Feedback.model_id == f.model_id, Feedback.image_id == f.image_id,
        Feedback.kind != f.kind, Feedback.undone_at == f.created_at).order_by(Feedback.id.desc()).limit(1)).first()
    if prev is not None:
        prev.undone_at = None
    return prev


def current_pair(model_id: int, user_id: int | None = None) -> dict:
    """{'good': pick | None, 'bad': pick | None}: the newest live picks (of the user, or of anyone when None)."""
    with read_session() as s:
        return {k: (_pick_dict(s, f) if (f := _current(s, model_id, user_id, k)) is not None else None)
                for k in KINDS}


def history(model_id: int | None = None, user_id: int | None = None, limit: int = 200) -> list[dict]:
    """Every pick, newest first, undone ones included (undone_at set)."""
    with read_session() as s:
        q = select(Feedback).order_by(Feedback.id.desc()).limit(limit)
        if model_id is not None:
            q = q.where(Feedback.model_id == int(model_id))
        if user_id is not None:
            q = q.where(Feedback.user_id == int(user_id))
        return [_pick_dict(s, f) for f in s.scalars(q)]


def suggest_pair(run_id: int, split: str | None = "train") -> dict:
    """The eXBL paper's choice for the user to confirm: good = max-AR image, bad = min-AR image of the run
    (within `split` when the run has images of it; ties broken by AP). {'good': row | None, 'bad': row | None}."""
    splits = [split] if split and split in run_splits(run_id) else None
    good, _ = query_explanations(run_id, sort="ar", descending=True, splits=splits, limit=1)
    bad, _ = query_explanations(run_id, sort="ar", descending=False, splits=splits, limit=1)
    good = [r for r in good if r["ar"] is not None]
    bad = [r for r in bad if r["ar"] is not None]
    return {"good": good[0] if good else None, "bad": bad[0] if bad else None}


# ----------------------------------------------------------------------------------------------- annotations

def annotate(user_id: int, image_id: int, quality: str | None = None, rating: int | None = None,
             comment: str = "", model_id: int | None = None, run_id: int | None = None) -> dict:
    """Store an explanation-quality annotation (quality good/bad/unsure, rating 1–5, plain-text comment)."""
    if quality is not None and quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
    if rating is not None:
        rating = int(rating)
        if not 1 <= rating <= 5:
            raise ValueError(f"rating must be 1 to 5, not {rating}")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment is longer than {MAX_COMMENT} characters")
    if quality is None and rating is None and not comment:
        raise ValueError("an annotation needs a quality, a rating or a comment")
    actor = require(user_id, "annotate")  # team
    with session() as s:
        if s.get(User, int(user_id)) is None:
            raise ValueError(f"no user {user_id}")
        if s.get(Image, int(image_id)) is None:
            raise ValueError(f"no image {image_id}")
        if run_id is not None:
            r = s.get(ExplanationRun, int(run_id))
            if r is None:
                raise ValueError(f"no explanation run {run_id}")
            model_id = model_id if model_id is not None else r.model_id
        a = Annotation(user_id=int(user_id), subject="explanation", model_id=model_id, run_id=run_id,
                       image_id=int(image_id), quality=quality, rating=rating, comment=comment)
        s.add(a)
        s.flush()
        audit.add(s, actor, "annotate", f"image:{image_id}", after={"annotation_id": a.id, "quality": quality,
                                                                      "rating": rating, "comment": comment})
        return _ann_dict(s, a)


def _ann_dict(s, a: Annotation) -> dict:
    u = s.get(User, a.user_id)
    im = s.get(Image, a.image_id) if a.image_id is not None else None
    return {"id": a.id, "user_id": a.user_id, "user": u.name if u else None, "subject": a.subject,
            "model_id": a.model_id, "run_id": a.run_id, "image_id": a.image_id, "path": im.path if im else None,
            "label": im.label if im else None, "quality": a.quality, "rating": a.rating, "comment": a.comment,
            "created_at": a.created_at.isoformat() if a.created_at else None}


def list_annotations(model_id: int | None = None, run_id: int | None = None, user_id: int | None = None,
                     image_ids: list[int] | None = None, quality: str | None = None, limit: int | None = 1000,
                     subject: str = "explanation") -> list[dict]:
    """Annotations, newest first, filtered by any of model, run, user, images and quality."""
    with read_session() as s:
        q = select(Annotation).where(Annotation.subject == subject).order_by(Annotation.id.desc())
        if model_id is not None:
            q = q.where(Annotation.model_id == int(model_id))
        if run_id is not None:
            q = q.where(Annotation.run_id == int(run_id))
        if user_id is not None:
            q = q.where(Annotation.user_id == int(user_id))
        if image_ids is not None:
            q = q.where(Annotation.image_id.in_([int(i) for i in image_ids]))
        if quality:
            q = q.where(Annotation.quality == quality)
        if limit:
            q = q.limit(limit)
        return [_ann_dict(s, a) for a in s.scalars(q)]
