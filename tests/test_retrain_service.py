"""eXBL retraining as a use case and a job: a child model with parent link, feedback ids, metrics and a new
ranking; every seed's child, plain control and random-pair control registered under one retrain id (lineage, same
batch order) with the held-out evidence of the group and of each child alone; the suggested pair (train only);
explicit image refs; val and test_shifted exemplars refused; the CLI's JSON; no registry row left by a cancel;
the report's figures never read train images, and a changed dataset or model is measured again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Model, Retrain
from services.explanations import explaining
from services.explanations import feedback
from services.jobs import lifecycle as jobs
from services.platform.database import session
from services.data.datasets import synth_dataset
from services.models.registry import get_model, models_root
from services.retraining.retrain import retrain
from services.models.training import train_classifier
from services.team.users import get_or_create_user
from tests.helpers_worker import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def parent():
    """A tiny dataset and a briefly trained parent: (model_id, dataset_id)."""
    ds = synth_dataset("t", n=160, size=32, confounder=0.9, seed=0, user_id=None)["dataset_id"]
    res = train_classifier("t", arch="simple_cnn", epochs=2, arch_kwargs={"width": 4}, batch_size=32, seed=0, user_id=None)
    return res["model_id"], ds


def _rows() -> int:
    with session() as s:
        return int(s.scalar(select(func.count()).select_from(Model)))


def _folders() -> list[str]:
    return sorted(p.name for p in models_root().iterdir() if not p.name.startswith(".tmp-"))


def _pin(mid: int, run_id: int, uid: int) -> tuple[dict, dict]:
    rows = explaining.run_rows(run_id)
    rows = [r for r in rows if r["split"] == "train" and r["ar"] is not None]
    rows.sort(key=lambda r: r["ar"])
    g = feedback.pick(uid, mid, rows[-1]["image_id"], "good", run_id)
    b = feedback.pick(uid, mid, rows[0]["image_id"], "bad", run_id)
    return g, b


def test_retrain_from_the_pinned_pair_makes_a_child_with_lineage_and_ranking(parent):
    mid, ds = parent
    uid = get_or_create_user("tester")
    run = explaining.run_explain(mid, "gradcam", user_id=None)
    g, b = _pin(mid, run["run_id"], uid)
    res = retrain(mid, "exbl", epochs=2, user_id=uid, control=False, random_control=False, seeds=1)
    child = get_model(res.model_id)
    assert res.control is None and res.effect_vs == "parent"
    assert res.parent_id == mid and child["parent_id"] == mid and res.model_id != mid
    assert child["feedback_ids"] == [g["id"], b["id"]] == res.feedback_ids
    assert set(res.metrics) == {"val", "test", "test_shifted"}
    assert {s: m["accuracy"] for s, m in child["metrics"].items()} == {s: m["accuracy"] for s, m in res.metrics.items()}
    assert child["config"]["xbl"]["pair"]["good"]["image_id"] == g["image_id"]
    assert child["config"]["xbl"]["pair_source"] == "pinned"
    # per-epoch diagnostics of docs/architecture.md, Definitions
    assert len(res.history) == 2
    for k in ("ce", "expl", "active", "d_pos", "d_neg", "val_acc", "val_ar", "val_ap"):
        assert k in res.history[0]
    assert not any(k.startswith(("test", "shifted")) for r in res.history for k in r)
    # the ranking was recomputed for the child, over the same splits as the parent's run
    latest = explaining.latest_run(res.model_id, "gradcam")
    assert latest is not None and latest["id"] == res.explain["run_id"]
    assert res.explain["summary"]["n"] == run["summary"]["n"]
    assert 0.0 <= res.explain["summary"]["ar_mean"] <= 1.0


def test_auto_uses_the_suggested_pair_and_runs_gradcam_when_there_is_none(parent):
    mid, _ = parent
    uid = get_or_create_user("tester")
    assert explaining.latest_run(mid, "gradcam") is None
    res = retrain(mid, "counterexamples", auto=True, epochs=1, user_id=uid, control=False, random_control=False,
                  seeds=1)
    prun = explaining.latest_run(mid, "gradcam")
    assert prun is not None
    sug = feedback.suggest_pair(prun["id"], "train")
    assert res.pair["good"]["split"] == res.pair["bad"]["split"] == "train"
    assert res.pair["good"]["image_id"] == sug["good"]["image_id"]
    assert res.pair["bad"]["image_id"] == sug["bad"]["image_id"]
    assert res.pair_source == "auto"
    # the pair used is recorded as the user's picks, and the child lists them
    pair = feedback.current_pair(mid, uid)
    assert res.feedback_ids == [pair["good"]["id"], pair["bad"]["id"]]


def test_explicit_refs_by_id_and_path_and_clear_errors(parent):
    mid, ds = parent
    from services.data.datasets import list_images

    ims = list_images(ds, split="train")
    res = retrain(mid, "ce", good=str(ims[0]["id"]), bad=ims[1]["path"], epochs=1, explain=False, control=False,
                  random_control=False, seeds=1, user_id=None)
    assert res.pair["good"]["image_id"] == ims[0]["id"] and res.pair["bad"]["image_id"] == ims[1]["id"]
    assert res.feedback_ids == []  # no user: nothing recorded
    with pytest.raises(ValueError, match="both"):
        retrain(mid, "exbl", good=ims[0]["id"], user_id=None)
    with pytest.raises(ValueError, match="same image"):
        retrain(mid, "exbl", good=ims[0]["id"], bad=ims[0]["path"], user_id=None)
    with pytest.raises(ValueError, match="no pinned"):
        retrain(mid, "exbl", user_id=None)
    with pytest.raises(ValueError, match="unknown method"):
        retrain(mid, "magic", auto=True, user_id=None)
    shifted = list_images(ds, split="test_shifted")[0]
    before = _rows()
    with pytest.raises(ValueError, match="from the test_shifted split"):
        retrain(mid, "exbl", good=shifted["path"], bad=ims[1]["id"], epochs=1, user_id=None)
    val = list_images(ds, split="val")[0]
    with pytest.raises(ValueError, match="from the val split: pick exemplars from train"):
        retrain(mid, "exbl", good=ims[0]["id"], bad=val["id"], epochs=1, user_id=None)
    assert _rows() == before
    with pytest.raises(ValueError, match="no setting"):
        retrain(mid, "exbl", auto=True, settings={"nope": 1}, user_id=None)


def test_cancel_while_fine_tuning_leaves_no_new_registry_row(parent):
    mid, ds = parent
    uid = get_or_create_user("tester")
    from services.data.datasets import list_images

    ims = list_images(ds, split="train")
    before_rows, before_dirs = _rows(), _folders()
    jid = jobs.create_job("exbl", {"model_id": mid, "method": "exbl", "good": ims[0]["id"], "bad": ims[1]["id"],
                                   "epochs": 500}, uid)
    t = threading.Thread(target=jobs.execute_job, args=(jid,))
    t.start()
    wait_for(jid, lambda r: len(r["metrics"] or []) >= 1)
    assert jobs.request_cancel(jid, user_id=None)
    t.join(timeout=120)
    assert jobs.get_job(jid)["status"] == "cancelled"
    assert _rows() == before_rows and _folders() == before_dirs


def test_cancel_during_the_new_ranking_removes_the_child_again(parent, monkeypatch):
    mid, ds = parent
    from services.data.datasets import list_images
    from services.jobs.lifecycle import JobCancelled

    ims = list_images(ds, split="train")
    before_rows, before_dirs = _rows(), _folders()

    def cancelled(*a, **k):
        raise JobCancelled("cancelled by user")

    monkeypatch.setattr(explaining, "run_explain", cancelled)
    with pytest.raises(JobCancelled):  # 2 seeds × child, control and random-pair control: all six go
        retrain(mid, "exbl", good=ims[0]["id"], bad=ims[1]["id"], epochs=1, seeds=2, user_id=None)
    assert _rows() == before_rows and _folders() == before_dirs
    with session() as s:
        assert s.scalar(select(func.count()).select_from(Retrain)) == 0


def test_cli_exbl_prints_one_json_object(parent, exemplar_home):
    mid, ds = parent
    from services.data.datasets import list_images

    ims = list_images(ds, split="train")
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_DEVICE": "cpu"}
    exe = Path(sys.executable).with_name("exemplar")
    out = subprocess.run([str(exe), "exbl", "--model", str(mid), "--good", str(ims[0]["id"]), "--bad",
                          ims[1]["path"], "--method", "exbl", "--epochs", "1", "--lam", "2", "--margin", "0.7",
                          "--no-control", "--no-random-control", "--seeds", "1", "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    j = json.loads(out.stdout)
    assert j["parent_id"] == mid and j["model_id"] != mid
    assert set(j["metrics"]) == {"val", "test", "test_shifted"}
    assert j["settings"]["lam"] == 2.0 and j["settings"]["margin"] == 0.7
    assert isinstance(j["explain"]["run_id"], int) and "ar_mean" in j["explain"]["summary"]
    assert "epoch 1/1" in out.stderr
    assert j["control"] is None and j["effect_vs"] == "parent" and j["verdict"]  # --no-control
    assert j["pair"]["good"]["split"] == "train" and "train" not in j["effect"]
    rep = subprocess.run([str(exe), "report", "--parent", str(mid), "--child", str(j["model_id"]), "--json"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    r = json.loads(rep.stdout)
    assert set(r["splits"]) == {"val", "test", "test_shifted"} and r["verdict"] == j["verdict"]
    assert r["splits"]["test"]["control"] is None and r["splits"]["test"]["child"]["accuracy"] is not None
    assert r["report"] == "child" and r["roles"] == {"val": "selection", "test": "evidence",
                                                       "test_shifted": "evidence"}
    helptext = subprocess.run([str(exe), "exbl", "--help"], env={**env, "COLUMNS": "200"}, cwd=ROOT,
                              capture_output=True, text=True, timeout=300).stdout
    from core.xbl import DEFAULT_METHOD
    assert f"default {DEFAULT_METHOD}" in " ".join(helptext.split())
    bad = subprocess.run([str(exe), "exbl", "--model", str(mid), "--auto", "--good", "1", "--json"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stdout == "" and "exclude" in bad.stderr
    shifted = list_images(ds, split="test_shifted")[0]
    ref = subprocess.run([str(exe), "exbl", "--model", str(mid), "--good", shifted["path"], "--bad",
                          str(ims[1]["id"]), "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ref.returncode != 0 and ref.stdout == "" and len(ref.stderr.strip().splitlines()) == 1
    assert "test_shifted split" in ref.stderr


def test_every_seed_registers_child_control_and_random_pair_control_under_one_retrain(parent):
    mid, ds = parent
    from services.data.datasets import list_images
    from services.retraining.report import evidence_report, retrain_report

    ims = list_images(ds, split="train")
    res = retrain(mid, "exbl_cf", good=ims[0]["id"], bad=ims[1]["id"], epochs=1, explain=False, batch_size=16,
                  seeds=2, user_id=None)
    assert res.seeds == 2 and len(res.seed_models) == 2 and isinstance(res.retrain_id, int)
    for sm in res.seed_models:
        child, ctl, rnd = (get_model(sm[k]) for k in ("child_id", "control_id", "random_control_id"))
        for m in (ctl, rnd):
            assert m["parent_id"] == mid and m["config"]["control_of"] == child["id"]
            assert m["config"]["retrain_id"] == child["config"]["retrain_id"] == res.retrain_id
            assert m["config"]["seed"] == child["config"]["seed"] == sm["seed"]
            # same epochs, lr, seed, batch size, frozen blocks and the same batch order
            assert m["config"]["xbl"]["finetune"] == child["config"]["xbl"]["finetune"]
            assert m["config"]["xbl"]["order_digest"] == child["config"]["xbl"]["order_digest"]
        assert ctl["config"]["lineage"] == f"control of #{child['id']}" and ctl["config"]["xbl"]["method"] == "ce"
        assert rnd["config"]["lineage"] == f"random-pair control of #{child['id']}"
        assert rnd["config"]["xbl"]["method"] == "exbl_cf" and rnd["config"]["xbl"]["pair_source"] == "random"
        rp = rnd["config"]["xbl"]["pair"]
        assert rp["good"]["split"] == rp["bad"]["split"] == "train"
        assert rp["good"]["label"] == res.pair["good"]["label"] and rp["bad"]["label"] == res.pair["bad"]["label"]
        assert {rp["good"]["image_id"], rp["bad"]["image_id"]}.isdisjoint({ims[0]["id"], ims[1]["id"]})
        assert child["config"]["control_id"] == ctl["id"] and child["config"]["random_control_id"] == rnd["id"]
        # report --child C describes C alone: its own figures, not the group's mean
        rep = evidence_report(mid, child["id"])
        assert rep["report"] == "child" and rep["seeds"] == 1 and rep["source"] == "stored with the retrain"
        assert rep["splits"]["test"]["child"]["accuracy"] == pytest.approx(child["metrics"]["test"]["accuracy"])
        assert rep["random_control"] == rnd["id"]
    # each seed draws its own random pair and its own counterexample partners
    pairs = [get_model(sm["random_control_id"])["config"]["xbl"]["pair"] for sm in res.seed_models]
    assert pairs[0] != pairs[1] or len(ims) < 4
    group = retrain_report(res.retrain_id)
    assert group["report"] == "retrain" and group["seeds"] == 2 and group["verdict"] == res.verdict
    accs = [get_model(sm["child_id"])["metrics"]["test"]["accuracy"] for sm in res.seed_models]
    assert group["splits"]["test"]["child"]["accuracy"] == pytest.approx(sum(accs) / 2)
    assert set(group["splits"]["test"]) >= {"parent", "control", "random_control", "child", "effect",
                                            "effect_recipe", "effect_choice"}
    e = res.effect_choice["test"]["accuracy"]
    cells = res.splits["test"]
    assert e["mean"] == pytest.approx(cells["child"]["accuracy"] - cells["random_control"]["accuracy"])
    assert group["roles"]["val"] == "selection" and "train" not in group["splits"]
    from db.models import AuditRow

    with session() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.action == "retrain.register")).all()
        assert [r.object for r in rows] == [f"retrain:{res.retrain_id}"]


def _forget_evidence(model_id: int) -> None:
    with session() as s:  # forget the stored evidence: the report measures now
        row = s.get(Model, model_id)
        row.config = {k: v for k, v in row.config.items() if k != "evidence"}


def _clear_cache() -> None:
    from services.platform.settings import get_settings

    for f in get_settings().path("cache", "evidence").glob("*.json"):
        f.unlink()


def test_report_figures_exclude_train_images(parent, monkeypatch):
    """Measured from checkpoints (a child without stored evidence, no cache): blanking every train image and
    flipping its label changes nothing in the report, so no train image enters a figure."""
    from services.retraining import evidence
    from services.retraining.report import evidence_report

    mid, ds = parent
    res = retrain(mid, "ce", auto=True, epochs=1, explain=False, seeds=1, user_id=None)
    _forget_evidence(res.model_id)
    first = evidence_report(mid, res.model_id)
    assert first["source"] == "measured now" and set(first["splits"]) == {"val", "test", "test_shifted"}
    real = evidence.load_arrays
    calls = []

    def poisoned(dataset_id, **kw):
        a = real(dataset_id)
        tr = a.split_index("train")
        a.images[tr] = 0
        a.labels[tr] = (a.labels[tr] + 1) % 4
        calls.append(dataset_id)
        return a

    monkeypatch.setattr(evidence, "load_arrays", poisoned)  # where the report's measurement looks it up
    _clear_cache()
    again = evidence_report(mid, res.model_id)
    assert calls and again["source"] == "measured now"  # the poisoned loader ran
    assert again["splits"] == first["splits"] and again["verdict"] == first["verdict"]


def test_a_changed_dataset_or_model_invalidates_the_evidence_cache(parent):
    import os
    import time

    from services.data.datasets import cache_path
    from services.retraining.report import evidence_report

    mid, ds = parent
    res = retrain(mid, "ce", auto=True, epochs=1, explain=False, seeds=1, random_control=False, user_id=None)
    _forget_evidence(res.model_id)
    assert evidence_report(mid, res.model_id)["source"] == "measured now"
    assert evidence_report(mid, res.model_id)["source"] == "measured earlier (cached)"
    later = time.time() + 5
    p = cache_path(ds)
    os.utime(p, (later, later))  # the dataset's array cache was rebuilt
    assert evidence_report(mid, res.model_id)["source"] == "measured now"
    ck = Path(get_model(res.model_id)["checkpoint"])
    os.utime(ck, (later + 5, later + 5))  # the child's checkpoint was replaced
    assert evidence_report(mid, res.model_id)["source"] == "measured now"
    assert evidence_report(mid, res.model_id)["source"] == "measured earlier (cached)"
