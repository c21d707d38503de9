"""Migrations bring empty SQLite and PostgreSQL databases to head; a repository round trip works on both."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect, select, text

from db.engine import get_engine, session_scope
from db.migrate import current, upgrade
from db.models import Annotation, Dataset, Feedback, Image, Job, Model, User
from tests.helpers_pg import postgres_url  # noqa: F401

TABLES = {"users", "datasets", "images", "models", "jobs", "workers", "explanation_runs", "explanations",
          "feedback", "annotations", "counterfactuals", "alembic_version"}


def _round_trip(url: str) -> None:
    upgrade(url)
    assert current(url) is not None
    assert TABLES <= set(inspect(get_engine(url)).get_table_names())
    with session_scope(url) as s:
        u = User(name="dr who")
        s.add(u)
        s.flush()
        d = Dataset(name="d", root="/x", layout="synthcxr", classes=["A", "B"], counts={"train": 1})
        s.add(d)
        s.flush()
        img = Image(dataset_id=d.id, path="A/images/A-1.png", label=0, split="train", sha256="0" * 64,
                    width=64, height=64, meta={"marker_corner": "tl"})
        m = Model(name="m", arch="simple_cnn", dataset_id=d.id, checkpoint="/x.safetensors", metrics={"val": {"accuracy": 0.5}})
        s.add_all([img, m])
        s.flush()
        s.add(Feedback(user_id=u.id, model_id=m.id, image_id=img.id, kind="good"))
        s.add(Annotation(user_id=u.id, model_id=m.id, image_id=img.id, quality="good", rating=4, comment="<b>plain</b>"))
        s.add(Job(kind="train", params={"epochs": 2}, metrics=[{"epoch": 1, "loss": 0.5}]))
    with session_scope(url) as s:
        assert s.scalars(select(Image)).one().meta == {"marker_corner": "tl"}
        assert s.scalars(select(Model)).one().metrics["val"]["accuracy"] == 0.5
        assert s.scalars(select(Annotation)).one().comment == "<b>plain</b>"
        assert s.scalars(select(Feedback)).one().kind == "good"
        assert s.scalars(select(Job)).one().metrics == [{"epoch": 1, "loss": 0.5}]
    # foreign keys are enforced
    with pytest.raises(Exception):
        with session_scope(url) as s:
            s.add(Feedback(user_id=999, model_id=999, image_id=999, kind="bad"))
    upgrade(url)  # idempotent


def test_sqlite_upgrade_and_round_trip(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _round_trip(url)
    with get_engine(url).connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


@pytest.mark.postgres
def test_postgres_upgrade_and_round_trip(postgres_url):
    _round_trip(postgres_url)
