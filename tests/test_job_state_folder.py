"""A job's resume folder ($EXEMPLAR_HOME/jobs/<id>) lives only while the job may run again: a final job (failed,
cancelled, succeeded) leaves none behind."""
from __future__ import annotations

from services.jobs import lifecycle as jobs
from services.platform.settings import get_settings
from services.team.users import get_or_create_user


def _failing(ctx):
    (ctx.state_dir() / "epoch.safetensors").write_bytes(b"state of epoch 1")
    raise ValueError("epoch 2 ran out of data")


def _cancelled(ctx):
    (ctx.state_dir() / "epoch.safetensors").write_bytes(b"state of epoch 1")
    jobs.request_cancel(ctx.job_id, user_id=None)
    ctx.progress(0.5, "epoch 2", force=True)


def test_a_final_job_leaves_no_state_folder(monkeypatch):
    uid = get_or_create_user("tester")
    monkeypatch.setattr(jobs, "_resolve", lambda kind: _failing)
    row = jobs.run_inline("data.synth", {"name": "x"}, uid, echo=False)
    assert row["status"] == "failed" and "ran out of data" in row["error"]
    assert not (get_settings().home_dir / "jobs" / str(row["id"])).exists()
    monkeypatch.setattr(jobs, "_resolve", lambda kind: _cancelled)
    row = jobs.run_inline("data.synth", {"name": "y"}, uid, echo=False)
    assert row["status"] == "cancelled"
    assert not (get_settings().home_dir / "jobs" / str(row["id"])).exists()
