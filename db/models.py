"""SQLAlchemy 2 ORM models: users, datasets, images, models, jobs, workers, explanations, feedback, annotations, counterfactuals, audit log, reading studies."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, Index,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.jsonsafe import SafeJSON as JSON  # every JSON column: NaN / ±inf stored as null on every engine


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # team (issue 13): role and the sign-in identity (OIDC subject / e-mail), if any
    role: Mapped[str] = mapped_column(String(20), default="reader", server_default="reader")
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    root: Mapped[str] = mapped_column(Text)  # issue 17: paths under EXEMPLAR_HOME are stored relative (0006_paths)
    layout: Mapped[str] = mapped_column(String(40))
    classes: Mapped[list] = mapped_column(JSON, default=list)
    image_size: Mapped[int] = mapped_column(Integer, default=64)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("dataset_id", "path"), Index("ix_images_dataset_split", "dataset_id", "split"))
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # relative to the dataset root
    label: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    mask_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    lesion_mask_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    marker_mask_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    index: Mapped[int] = mapped_column(Integer, default=0)  # row in the dataset's array cache


class Model(Base):
    """A registry row: a classifier, a generator (ddpm, gan) or an explainer (ltx)."""
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="classifier")
    arch: Mapped[str] = mapped_column(String(60))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    target_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    checkpoint: Mapped[str] = mapped_column(Text)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    feedback_ids: Mapped[list] = mapped_column(JSON, default=list)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Retrain(Base):
    """One retrain: a parent, a method and K seeds, each seed a child, a plain control and a random-pair control
    (models whose config holds retrain_id and seed); evidence = the group's figures over seeds (issue 22)."""
    __tablename__ = "retrains"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    method: Mapped[str] = mapped_column(String(40))
    seeds: Mapped[int] = mapped_column(Integer, default=1)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """The one truth about a job: status, progress, message, per-step metrics, heartbeat, cancel, result."""
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[list] = mapped_column(JSON, default=list)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # --- scale-out (issue 15, migration 0002_jobs): attempts and who runs the job now ---
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # claims so far
    max_retries: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # re-runs after `lost`
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the process running it now
    host: Mapped[str | None] = mapped_column(String(200), nullable=True)  # where that process runs
    history: Mapped[list | None] = mapped_column(JSON, default=list, nullable=True)  # one entry per finished attempt
    # --- faults (issue 23, migration 0009_leases): when the row's message was last sent to the queue ---
    queued_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # --- ETAs (issue 25, migration 0010_timeline): [[seconds since the attempt started, progress], …] ---
    timeline: Mapped[list | None] = mapped_column(JSON, nullable=True)


class Worker(Base):
    """A worker's lease: its jobs are alive while `lease_until` is in the future (renewed by its heartbeat)."""
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    device: Mapped[str] = mapped_column(String(40), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # issue 23 (0009_leases)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # a clean stop ends the lease


class Token(Base):
    """A personal API token (issue 23, migration 0008_tokens): stored as its SHA-256, shown once at creation."""
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    prefix: Mapped[str] = mapped_column(String(12))  # the first characters, to tell tokens apart in a list
    label: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ExplanationRun(Base):
    __tablename__ = "explanation_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(20), default="predicted")
    splits: Mapped[list] = mapped_column(JSON, default=list)
    tau: Mapped[float] = mapped_column(Float, default=0.5)
    maps_path: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Explanation(Base):
    """One image's metrics within a run; its map is row `index` of the run's array file."""
    __tablename__ = "explanations"
    __table_args__ = (UniqueConstraint("run_id", "image_id"), Index("ix_expl_run_ar", "run_id", "ar"))
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("explanation_runs.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    target: Mapped[int] = mapped_column(Integer)
    pred: Mapped[int] = mapped_column(Integer)
    prob: Mapped[float] = mapped_column(Float)
    ar: Mapped[float | None] = mapped_column(Float, nullable=True)
    ap: Mapped[float | None] = mapped_column(Float, nullable=True)
    f1: Mapped[float | None] = mapped_column(Float, nullable=True)
    soft_ar: Mapped[float | None] = mapped_column(Float, nullable=True)
    relevance_mass: Mapped[float | None] = mapped_column(Float, nullable=True)
    rra: Mapped[float | None] = mapped_column(Float, nullable=True)
    pointing: Mapped[float | None] = mapped_column(Float, nullable=True)
    wr: Mapped[float | None] = mapped_column(Float, nullable=True)


class Feedback(Base):
    """An exemplar pick (good / bad); undone picks keep their row with undone_at set."""
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("explanation_runs.id", ondelete="SET NULL"), nullable=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))  # good | bad
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Annotation(Base):
    """Explanation-quality or counterfactual-realism annotation by a user."""
    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    subject: Mapped[str] = mapped_column(String(20), default="explanation")  # explanation | counterfactual
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("explanation_runs.id", ondelete="SET NULL"), nullable=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), nullable=True)
    counterfactual_id: Mapped[int | None] = mapped_column(ForeignKey("counterfactuals.id", ondelete="CASCADE"), nullable=True)
    quality: Mapped[str | None] = mapped_column(String(10), nullable=True)  # good | bad | unsure
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1..5
    plausible: Mapped[str | None] = mapped_column(String(10), nullable=True)  # yes | no | unsure
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Counterfactual(Base):
    __tablename__ = "counterfactuals"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    generator_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(30))
    preset: Mapped[str | None] = mapped_column(String(30), nullable=True)
    target: Mapped[int] = mapped_column(Integer)
    flipped: Mapped[bool] = mapped_column(Boolean, default=False)
    target_prob: Mapped[float] = mapped_column(Float, default=0.0)
    l1: Mapped[float] = mapped_column(Float, default=0.0)
    bpd: Mapped[float | None] = mapped_column(Float, nullable=True)
    category: Mapped[str | None] = mapped_column(String(20), nullable=True)
    unet_passes: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    result_path: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# ------------------------------------------------------------------ team (issue 13): audit trail, reading studies

class AuditRow(Base):
    """One write: who (name and role at the time), when, action, object, before / after. Append-only."""
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_at", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # no FK: the log outlives users
    user_name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(20), default="")
    action: Mapped[str] = mapped_column(String(60), index=True)
    object: Mapped[str] = mapped_column(String(200), default="")
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class Study(Base):
    """A blinded reading study over explanation maps of a run or counterfactual pairs."""
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="map")  # map | cf_pair
    run_id: Mapped[int | None] = mapped_column(ForeignKey("explanation_runs.id", ondelete="SET NULL"), nullable=True)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StudyQuestion(Base):
    __tablename__ = "study_questions"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)
    scale: Mapped[str] = mapped_column(String(10))  # nominal | ordinal
    levels: Mapped[list] = mapped_column(JSON, default=list)  # answer values, in order


class StudyItem(Base):
    """One thing to read: a map (explanation row) or a counterfactual pair (a, b); `meta` is never shown to readers."""
    __tablename__ = "study_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    explanation_id: Mapped[int | None] = mapped_column(ForeignKey("explanations.id", ondelete="SET NULL"), nullable=True)
    cf_a_id: Mapped[int | None] = mapped_column(ForeignKey("counterfactuals.id", ondelete="SET NULL"), nullable=True)
    cf_b_id: Mapped[int | None] = mapped_column(ForeignKey("counterfactuals.id", ondelete="SET NULL"), nullable=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)


class StudyReader(Base):
    __tablename__ = "study_readers"
    __table_args__ = (UniqueConstraint("study_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    seed: Mapped[int] = mapped_column(Integer, default=0)  # per-reader order of pairs


class StudyAnswer(Base):
    """A reader's answer (or a consensus when `consensus`); never overwritten: a change is a new version."""
    __tablename__ = "study_answers"
    __table_args__ = (Index("ix_answers_study", "study_id", "question_id", "item_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("study_items.id", ondelete="CASCADE"))
    question_id: Mapped[int] = mapped_column(ForeignKey("study_questions.id", ondelete="CASCADE"))
    side: Mapped[str] = mapped_column(String(1), default="")  # '' for a map, 'a' | 'b' for a pair's member
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    value: Mapped[str | None] = mapped_column(String(100), nullable=True)  # None = skipped
    version: Mapped[int] = mapped_column(Integer, default=1)
    consensus: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
