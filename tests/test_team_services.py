"""Team services: roles refused in the service, an audit row per kind of write, blinded studies with versioned
answers, agreement equal to the library, adjudication into a retrain pair, the CSV formula escape."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from services.team import audit, audit_log

from services.jobs import lifecycle as jobs

from services.reading import studies

from services.reading import results as study_results
from services.team.roles import PermissionRefused
from services.team.users import get_or_create_user, get_user, list_users, serve_refusal
from services.team.access import set_role
from tests.helpers_explain import dataset_and_model, fake_run


@pytest.fixture
def team():
    admin = get_or_create_user("tester")  # the first user: admin
    ids = {"admin": admin}
    for name, role in (("res", "researcher"), ("r1", "reader"), ("r2", "reader")):
        ids[name] = set_role(admin, name, role)["id"]
    return ids


def test_first_user_admin_and_roles(team, monkeypatch):
    assert get_user(team["admin"])["role"] == "admin"
    assert {u["name"]: u["role"] for u in list_users()} == {"tester": "admin", "res": "researcher",
                                                            "r1": "reader", "r2": "reader"}
    with pytest.raises(PermissionRefused, match="role reader"):
        set_role(team["r1"], "r1", "admin")
    monkeypatch.setenv("EXEMPLAR_ADMINS", "R1")
    assert get_user(team["r1"])["role"] == "admin"


def test_reader_refused_training_import_and_cancelling_others_jobs(team):
    with pytest.raises(PermissionRefused, match="has role reader.*training job"):
        jobs.create_job("train", {"dataset": "x"}, team["r1"])
    with pytest.raises(PermissionRefused, match="role reader"):
        jobs.submit("data.import", {"path": "/etc", "name": "x"}, team["r1"])
    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, team["res"])
    with pytest.raises(PermissionRefused, match="role reader.*another user's job"):
        jobs.request_cancel(jid, team["r1"])
    with pytest.raises(PermissionRefused, match="role researcher"):
        jobs.request_cancel(jobs.create_job("data.synth", {"name": "y"}, team["admin"]), team["res"])
    assert jobs.request_cancel(jid, team["res"])  # own job
    assert jobs.get_job(jid)["status"] == "cancelled"
    with pytest.raises(PermissionRefused):
        study_results.agreement(team["r1"], 1)
    with pytest.raises(PermissionRefused, match="audit log"):
        audit_log.list_rows(team["r1"])


def test_only_an_admin_cancels_an_ownerless_job(team):
    from db.models import Job
    from services.platform.database import session

    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, team["admin"])
    with session() as s:
        s.get(Job, jid).created_by = None  # as a job created in set-up mode, before the first admin
    for who in ("r1", "res"):
        with pytest.raises(PermissionRefused, match=f"role {get_user(team[who])['role']}.*ownerless one"):
            jobs.request_cancel(jid, team[who])
    assert jobs.get_job(jid)["status"] == "queued" and not audit_log.list_rows(team["admin"], action="job.cancel")
    assert jobs.request_cancel(jid, team["admin"])


def _study(team, n=8, scale="nominal:good,bad"):
    ds, mid = dataset_and_model(n=24)
    run = fake_run(ds, mid)
    res = studies.create_study(team["res"], [("Map highlights the region", scale), ("Realistic?", "ordinal:1-5")],
                               ["r1", "r2"], run_id=run, n=n, stratify="ar")
    return res, run, mid


def test_study_blinded_versions_agreement_and_consensus_pair(team):
    with pytest.raises(PermissionRefused, match="create a study"):
        studies.create_study(team["r1"], [("q", "ordinal:1-5")], ["r2"], run_id=1, n=3)
    res, run, mid = _study(team)
    assert len(res["items"]) == 8
    wl1, wl2 = studies.worklist(team["r1"], res["study_id"]), studies.worklist(team["r2"], res["study_id"])
    assert sorted(i["item_id"] for i in wl1) == sorted(res["items"])
    text = json.dumps(wl1)
    for leak in ("gradcam", "model", "ar", "ap", "method"):
        assert f'"{leak}' not in text  # no model id, method name or metric in what the reader gets
    with pytest.raises(PermissionRefused):
        studies.worklist(team["admin"], res["study_id"])  # not assigned: no worklist
    a = ["good", "good", "bad", "good", "bad", "bad", "good", "good"]
    b = ["good", "bad", "bad", "good", "bad", "good", "good", "bad"]
    for it, x, y in zip(res["items"], a, b):
        studies.answer(team["r1"], res["study_id"], it, "bad" if x == "good" else "good")  # first thought
        v = studies.answer(team["r1"], res["study_id"], it, x)  # changed: a new version
        assert v["version"] == 2
        studies.answer(team["r2"], res["study_id"], it, y)
    with pytest.raises(ValueError, match="good, bad"):
        studies.answer(team["r1"], res["study_id"], res["items"][0], "maybe")
    with pytest.raises(PermissionRefused):
        studies.answer(team["res"], res["study_id"], res["items"][0], "good")  # not a reader of it
    mine = studies.worklist(team["r1"], res["study_id"])
    assert all(len(i["answers"]) == 1 for i in mine)  # own answers only, one question answered
    hist = study_results.answer_rows(team["res"], res["study_id"], history=True)
    assert len(hist) == 24  # 8 first thoughts kept + 8 changes + 8 of r2
    ag = study_results.agreement(team["res"], res["study_id"], reps=200)
    from sklearn.metrics import cohen_kappa_score
    import krippendorff

    code = {"good": 0, "bad": 1}
    ca, cb = [code[x] for x in a], [code[x] for x in b]
    assert abs(ag["cohen_kappa"][0]["value"] - cohen_kappa_score(ca, cb)) < 1e-9
    assert ag["cohen_kappa"][0]["readers"] == ["r1", "r2"]
    assert abs(ag["krippendorff_alpha"]["value"] - krippendorff.alpha([ca, cb], level_of_measurement="nominal")) < 1e-9
    for k in ("krippendorff_alpha", "fleiss_kappa"):
        assert ag[k]["low"] <= ag[k]["value"] <= ag[k]["high"]
    assert {"ar", "ap", "soft_ar"} <= set(ag["spearman"]) and "rho" in ag["spearman"]["ar"]
    assert ag["most_disagreement"] and ag["most_disagreement"][0]["disagreement"] == 0.5
    # adjudication: consensus good and bad give the retrain pair
    with pytest.raises(PermissionRefused):
        studies.adjudicate(team["r1"], res["study_id"], res["items"][1], "good")
    studies.adjudicate(team["res"], res["study_id"], res["items"][1], "good", note="lungs")
    studies.adjudicate(team["admin"], res["study_id"], res["items"][5], "bad")
    pair = studies.consensus_pair(team["res"], res["study_id"])
    items = {r["item_id"] for r in study_results.answer_rows(team["res"], res["study_id"]) if r["consensus"]}
    assert items == {res["items"][1], res["items"][5]}
    assert pair["model_id"] == mid and pair["good"] is not None and pair["bad"] is not None
    assert pair["good"] != pair["bad"]


def test_ordinal_question_uses_weighted_kappa(team):
    res, _, _ = _study(team, n=6)
    q2 = res["questions"][1]
    x, y = ["1", "2", "3", "4", "5", "5"], ["2", "2", "3", "5", "4", "5"]
    for it, u, v in zip(res["items"], x, y):
        studies.answer(team["r1"], res["study_id"], it, u, question_id=q2)
        studies.answer(team["r2"], res["study_id"], it, v, question_id=q2)
    ag = study_results.agreement(team["admin"], res["study_id"], q2, reps=100)
    from sklearn.metrics import cohen_kappa_score

    want = cohen_kappa_score([int(v) for v in x], [int(v) for v in y], weights="quadratic", labels=[1, 2, 3, 4, 5])
    assert ag["scale"] == "ordinal" and abs(ag["cohen_kappa"][0]["value"] - want) < 1e-9


def test_audit_row_for_every_kind_of_write(team, tmp_path):
    from services.counterfactuals import runs as counterfactuals
    from services.explanations import feedback
    from services.explanations.export import export_explanations

    res, run, mid = _study(team, n=3)
    studies.answer(team["r1"], res["study_id"], res["items"][0], "good")
    studies.adjudicate(team["res"], res["study_id"], res["items"][0], "good")
    from services.explanations.explaining import run_rows

    img = next(r["image_id"] for r in run_rows(run) if r["split"] == "train")  # picks are of train images
    p = feedback.pick(team["r1"], mid, img, "good", run_id=run)
    feedback.undo(team["r1"], mid, p["id"])
    feedback.annotate(team["r2"], img, quality="bad", comment="=HYPERLINK(\"x\")", run_id=run)
    jid = jobs.create_job("data.synth", {"name": "z", "n": 10}, team["res"])
    jobs.request_cancel(jid, team["admin"])
    export_explanations(run, tmp_path / "e.npz", user_id=team["res"])
    with pytest.raises(PermissionRefused):
        export_explanations(run, tmp_path / "f.npz", user_id=team["r1"])
    with pytest.raises(ValueError):
        counterfactuals.annotate(999, team["r1"], rating=3)
    rows = audit_log.list_rows(team["admin"])
    kinds = {r["action"] for r in rows}
    assert {"user.create", "user.role", "model.register", "study.create", "study.answer", "study.consensus", "pick",
            "pick.undo", "annotate", "job.start", "job.cancel", "export"} <= kinds
    role = {r["action"]: (r["user"], r["role"]) for r in rows}
    assert role["job.cancel"] == ("tester", "admin") and role["pick"] == ("r1", "reader")
    ch = next(r for r in rows if r["action"] == "user.role" and r["object"] == "user:r1")
    assert ch["after"] == {"role": "reader"} and all(r["at"] for r in rows)
    assert audit_log.list_rows(team["admin"], user="r1", action="pick") and \
        all(r["user"] == "r1" for r in audit_log.list_rows(team["admin"], user="r1"))


def test_csv_escapes_formula_cells():
    rows = [{"a": "=1+2", "b": "+cmd", "c": "-x", "d": "@SUM(A1)", "e": "plain", "f": -0.5, "g": "\t=x"}]
    text = audit.to_csv(rows)
    got = next(csv.DictReader(io.StringIO(text)))
    assert got == {"a": "'=1+2", "b": "'+cmd", "c": "'-x", "d": "'@SUM(A1)", "e": "plain", "f": "-0.5", "g": "'\t=x"}


def test_study_export_escapes_and_is_audited(team):
    set_role(team["admin"], "=evil", "reader")
    ds, mid = dataset_and_model(n=24)
    res = studies.create_study(team["res"], [("-q", "nominal:good,bad")], ["r1", "=evil"], run_id=fake_run(ds, mid), n=3)
    studies.answer(get_or_create_user("=evil"), res["study_id"], res["items"][0], "good")
    text = study_results.export(team["res"], res["study_id"], "answers", "csv")
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["reader"] == "'=evil" and row["question"] == "'-q" and row["value"] == "good"
    js = json.loads(study_results.export(team["res"], res["study_id"], "agreement", "json"))
    assert {r["statistic"] for r in js["rows"]} >= {"krippendorff_alpha", "fleiss_kappa"}
    assert [r for r in audit_log.list_rows(team["admin"], action="export") if r["object"] == f"study:{res['study_id']}"]


def test_serve_refusal():
    assert serve_refusal("127.0.0.1") is None and serve_refusal("localhost") is None and serve_refusal("::1") is None
    why = serve_refusal("0.0.0.0")
    assert why and "sign-in" in why and "--insecure-no-auth" in why and "\n" not in why
    assert serve_refusal("0.0.0.0", insecure_no_auth=True) is None


def _pairs_fixture(team, n_images=8):
    from db.models import Counterfactual
    from services.counterfactuals.runs import results_root
    from services.platform.database import session
    from services.data.datasets import list_images

    ds, mid = dataset_and_model(n=24)
    imgs = list_images(ds)[:n_images]
    rng = np.random.default_rng(0)
    with session() as s:
        for im in imgs:
            for k, method in enumerate(("diffusion", "gan")):
                p = results_root() / f"{im['id']}_{method}.npz"
                np.savez(p, counterfactual=np.full((32, 32), 10 + 100 * k, np.uint8), original=np.zeros((32, 32), np.uint8))
                s.add(Counterfactual(model_id=mid, image_id=im["id"], method=method, target=0, l1=float(rng.random()),
                                     bpd=float(rng.random() + 3), result_path=str(p)))
    return mid


def test_counterfactual_pair_study_randomises_sides_per_reader(team):
    mid = _pairs_fixture(team)
    pairs = studies.auto_pairs(mid, "diffusion", "gan")
    assert len(pairs) == 8
    res = studies.create_study(team["res"], [("Looks like a real radiograph", "ordinal:1-5")], ["r1", "r2"], pairs=pairs)
    w1 = {i["item_id"]: i["sides"] for i in studies.worklist(team["r1"], res["study_id"])}
    w2 = {i["item_id"]: i["sides"] for i in studies.worklist(team["r2"], res["study_id"])}
    assert all(sorted(v) == ["a", "b"] for v in w1.values())
    assert w1 != w2  # left/right drawn per reader
    assert "diffusion" not in json.dumps(studies.worklist(team["r1"], res["study_id"]))
    it = res["items"][0]
    pics = studies.item_pictures(team["r1"], res["study_id"], it)
    left_is_a = w1[it][0] == "a"  # side a is the diffusion one (pixel value 10), b the gan one (110)
    assert int(pics["left"].max()) == (10 if left_is_a else 110) and int(pics["right"].max()) == (110 if left_is_a else 10)
    for item in res["items"]:
        for sd, v1, v2 in (("a", "2", "2"), ("b", "4", "5")):
            studies.answer(team["r1"], res["study_id"], item, v1, side=sd)
            studies.answer(team["r2"], res["study_id"], item, v2, side=sd)
    with pytest.raises(ValueError, match="pair"):
        studies.answer(team["r1"], res["study_id"], it, "3")  # a pair's answer names its side
    ag = study_results.agreement(team["res"], res["study_id"], reps=100)
    assert ag["n_units"] == 16 and set(ag["spearman"]) == {"bpd", "l1"}
    assert ag["krippendorff_alpha"]["value"] > 0.5


def test_readers_against_pos_neg_del_ins(team):
    res, _, _ = _study(team, n=6, scale="nominal:good,bad")
    row = jobs.run_inline("study.metrics", {"study_id": res["study_id"]}, team["res"], echo=False)
    assert row["status"] == "succeeded", row["error"]
    for it, v in zip(res["items"], ["good", "bad", "good", "bad", "good", "good"]):
        studies.answer(team["r1"], res["study_id"], it, v)
    ag = study_results.agreement(team["res"], res["study_id"], reps=100)
    assert {"pos", "neg", "del", "ins", "ar", "ap", "soft_ar"} <= set(ag["spearman"])
    assert "pos" not in json.dumps(studies.worklist(team["r1"], res["study_id"]))
    with pytest.raises(PermissionRefused):
        jobs.create_job("study.metrics", {"study_id": res["study_id"]}, team["r1"])
