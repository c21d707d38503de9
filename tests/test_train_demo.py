"""`exemplar demo`: idempotent bootstrap; at full size (slow) the baseline shows the shortcut."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.demo import steps as demo

from services.jobs import lifecycle as jobs
from services.models.catalog import list_datasets, list_models
from services.team.users import get_or_create_user

ROOT = Path(__file__).resolve().parents[1]


def test_demo_is_idempotent(monkeypatch):
    # this area's two steps only (later areas append theirs and test them)
    monkeypatch.setattr(demo, "DEMO_STEPS", [s for s in demo.DEMO_STEPS if s.name in ("dataset", "baseline")])
    monkeypatch.setattr(demo, "DEMO_SYNTH", {**demo.DEMO_SYNTH, "n": 120, "size": 32})
    monkeypatch.setattr(demo, "BASELINE", {**demo.BASELINE, "epochs": 1, "arch_kwargs": {"width": 4}})
    uid = get_or_create_user("tester")
    first = jobs.run_inline("demo", {}, uid, echo=False)
    assert first["status"] == "succeeded", first["error"]
    res = first["result"]
    assert [s["status"] for s in res["steps"]] == ["built", "built"]
    assert res["summary"]["baseline_model_id"] == res["baseline"]["model_id"]
    assert 0 <= res["summary"]["test_shifted_accuracy"] <= 1
    second = jobs.run_inline("demo", {}, uid, echo=False)["result"]
    assert [s["status"] for s in second["steps"]] == ["existing", "existing"]
    assert second["summary"] == res["summary"]
    assert len(list_datasets()) == 1 and len(list_models()) == 1
    # a lost checkpoint is rebuilt, not trusted
    Path(list_models()[0]["checkpoint"]).unlink()
    third = jobs.run_inline("demo", {}, uid, echo=False)["result"]
    assert [s["status"] for s in third["steps"]] == ["existing", "built"]


def test_demo_refuses_a_foreign_dataset_named_demo(monkeypatch):
    from services.data.datasets import synth_dataset

    monkeypatch.setattr(demo, "DEMO_STEPS", [s for s in demo.DEMO_STEPS if s.name in ("dataset", "baseline")])
    synth_dataset("demo", n=80, size=32, seed=5, user_id=None)
    row = jobs.run_inline("demo", {}, get_or_create_user("tester"), echo=False)
    assert row["status"] == "failed" and "not the demo" in row["error"]
    assert list_models() == []


@pytest.mark.slow
def test_full_demo_baseline_shows_the_shortcut(exemplar_home):
    """The demo's own settings: iid test accuracy ≥ 0.90 and test_shifted at least 0.20 lower."""
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_DEVICE": "cpu"}
    exe = Path(sys.executable).with_name("exemplar")
    out = subprocess.run([str(exe), "demo", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    sm = json.loads(out.stdout)["summary"]
    assert sm["test_accuracy"] >= 0.90, sm
    assert sm["test_shifted_accuracy"] <= sm["test_accuracy"] - 0.20, sm
    again = subprocess.run([str(exe), "demo", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and all(s["status"] == "existing" for s in json.loads(again.stdout)["steps"])
