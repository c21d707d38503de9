"""Training as a job on a real (tiny) SynthCXR dataset: registry row + metrics per split, CLI JSON, and no row or
checkpoint left by a cancelled, failed or killed run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Model
from services.jobs import lifecycle as jobs
from services.platform.database import session
from services.data.datasets import synth_dataset
from services.models.registry import models_root
from services.models.training import evaluate_splits, train_classifier
from services.team.users import get_or_create_user
from tests.helpers_worker import wait_for

ROOT = Path(__file__).resolve().parents[1]
TINY = {"arch": "simple_cnn", "arch_kwargs": {"width": 4}, "batch_size": 32}


@pytest.fixture
def tiny_dataset():
    return synth_dataset("t", n=160, size=32, confounder=0.9, seed=0, user_id=None)["dataset_id"]


def _model_rows() -> int:
    with session() as s:
        return int(s.scalar(select(func.count()).select_from(Model)))


def _folders() -> list[str]:
    return sorted(p.name for p in models_root().iterdir()) if models_root().exists() else []


def test_train_registers_a_model_with_metrics_per_split(tiny_dataset):
    res = train_classifier("t", epochs=2, seed=0, **TINY, user_id=None)
    assert set(res["metrics"]) == {"val", "test", "test_shifted"}
    for m in res["metrics"].values():
        assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(m)
        assert sum(map(sum, m["confusion"])) == m["n"]
    from services.models.registry import get_model

    row = get_model(res["model_id"])
    assert row["dataset_id"] == tiny_dataset and row["arch"] == "simple_cnn"
    assert row["config"]["history"] and row["config"]["classes"][0] == "COVID"
    assert Path(row["checkpoint"]).is_file() and Path(row["checkpoint"]).with_suffix(".json").is_file()
    again = evaluate_splits(res["model_id"], splits=("test",))
    assert again["test"]["accuracy"] == res["metrics"]["test"]["accuracy"]  # the checkpoint is the best model


def test_cancelled_run_leaves_no_row_and_no_checkpoint(tiny_dataset):
    uid = get_or_create_user("tester")
    jid = jobs.create_job("train", {"dataset": "t", "epochs": 500, "patience": 500, **TINY}, uid)
    t = threading.Thread(target=jobs.execute_job, args=(jid,))
    t.start()
    wait_for(jid, lambda r: len(r["metrics"] or []) >= 1)
    assert jobs.request_cancel(jid, user_id=None)
    t.join(timeout=120)
    assert jobs.get_job(jid)["status"] == "cancelled"
    assert _model_rows() == 0 and _folders() == []


def test_failure_while_registering_removes_the_checkpoint(tiny_dataset, monkeypatch):
    import services.models.training as reg  # where train_classifier looks register_model up

    def boom(**kw):
        raise RuntimeError("database went away")

    monkeypatch.setattr(reg, "register_model", boom)
    with pytest.raises(RuntimeError, match="went away"):
        train_classifier("t", epochs=1, **TINY, user_id=None)
    assert _model_rows() == 0 and _folders() == []


def test_killed_run_leaves_no_row(tiny_dataset, exemplar_home):
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_DEVICE": "cpu"}
    exe = Path(sys.executable).with_name("exemplar")
    p = subprocess.Popen([str(exe), "train", "--dataset", "t", "--arch", "simple_cnn", "--epochs", "500",
                          "--patience", "500", "--batch-size", "32", "--json"], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        jid = None
        import time

        deadline = time.monotonic() + 180
        while jid is None and time.monotonic() < deadline:
            rows = jobs.list_jobs(status="running")
            jid = rows[0]["id"] if rows else None
            time.sleep(0.2)
        assert jid, "the train job never started"
        wait_for(jid, lambda r: len(r["metrics"] or []) >= 1)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert _model_rows() == 0
    assert [f for f in _folders() if not f.startswith(".tmp-")] == []
    assert jobs.mark_lost(stale_after_s=0.0) == 1  # the inline run's own heartbeat was its lease


def test_cli_train_prints_one_json_object(tiny_dataset, exemplar_home):
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_DEVICE": "cpu"}
    exe = Path(sys.executable).with_name("exemplar")
    out = subprocess.run([str(exe), "train", "--dataset", "t", "--arch", "simple_cnn", "--epochs", "1",
                          "--batch-size", "32", "--seed", "1", "--json"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    j = json.loads(out.stdout)
    assert isinstance(j["model_id"], int)
    assert set(j["metrics"]) == {"val", "test", "test_shifted"}
    assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(j["metrics"]["test_shifted"])
    assert "epoch 1/1" in out.stderr  # progress goes to stderr
    bad = subprocess.run([str(exe), "train", "--dataset", "nope", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stdout == "" and "no dataset" in bad.stderr


def test_missing_pretrained_file_and_bad_freeze_are_clear_errors(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_classifier("t", epochs=1, pretrained=str(tmp_path / "none.pth"), **TINY, user_id=None)
    with pytest.raises(ValueError, match="freeze"):
        train_classifier("t", epochs=1, freeze_blocks=4, **TINY, user_id=None)
