"""AppTest: the Retrain page starts an `exbl` job (default method, both controls, 3 seeds) from the pinned pair
and shows its progress, per-epoch charts and verdict; a test_shifted pick is refused when it is made; the report page
renders for a parent / child pair (verdict, parent | control | child per held-out split, histograms, confusion
matrices, changed images, HTML download); the exported HTML is self-contained and held-out only."""
from __future__ import annotations

import re
from html import escape as html_escape

import pytest

from pages.parts.plain import md_escape
from services.explanations import explaining
from services.explanations import feedback
from services.jobs import lifecycle as jobs
from services.data.datasets import synth_dataset
from services.retraining.retrain import retrain
from services.models.training import train_classifier
from services.team.users import get_or_create_user
from tests.helpers_app import app_test, open_page


def _n_images(at) -> int:
    return sum(len(el.proto.imgs) for el in at.get("image"))


@pytest.fixture
def pinned():
    synth_dataset("t", n=160, size=32, confounder=0.9, seed=0, user_id=None)
    mid = train_classifier("t", arch="simple_cnn", epochs=2, arch_kwargs={"width": 4}, batch_size=32, user_id=None)["model_id"]
    run = explaining.run_explain(mid, "gradcam", user_id=None)
    uid = get_or_create_user("tester")
    rows = sorted((r for r in explaining.run_rows(run["run_id"]) if r["split"] == "train"),
                  key=lambda r: (r["ar"] is None, r["ar"]))
    g = feedback.pick(uid, mid, rows[-1]["image_id"], "good", run["run_id"])
    b = feedback.pick(uid, mid, rows[0]["image_id"], "bad", run["run_id"])
    return mid, uid, g, b


def test_retrain_page_starts_a_job_from_the_pinned_pair_and_shows_progress(pinned):
    mid, uid, g, b = pinned
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "retrain")
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.caption)
    # both exemplars shown with their metrics (paths as escaped plain text in the Markdown source)
    assert md_escape(g["path"]) in text and md_escape(b["path"]) in text
    assert _n_images(at) >= 2  # both maps
    from core.xbl import DEFAULT_METHOD

    assert at.selectbox(key="rt_method").value == DEFAULT_METHOD
    assert at.checkbox(key="rt_control").value is True and at.checkbox(key="rt_random_control").value is True
    assert at.number_input(key="rt_seeds").value == 3
    at.number_input(key="rt_seeds").set_value(2)
    at.number_input(key="rt_epochs").set_value(2)
    at.button(key="rt_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    jid = at.session_state["rt_job"]
    job = jobs.get_job(jid)
    assert job["kind"] == "exbl" and job["status"] == "queued" and job["created_by"] == uid
    assert job["params"]["model_id"] == mid and job["params"]["feedback_ids"] == [g["id"], b["id"]]
    assert job["params"]["epochs"] == 2 and job["params"]["method"] == DEFAULT_METHOD
    assert job["params"]["control"] is True and job["params"]["seeds"] == 2
    assert job["params"]["random_control"] is True
    # submitting the same form again (Enter, then the button) does not queue the same work twice
    at.button(key="rt_start").click().run()
    assert at.session_state["rt_job"] == jid and [j["kind"] for j in jobs.list_jobs()].count("exbl") == 1
    assert any(f"Job {jid} with this pair" in i.value for i in at.info)
    # the worker's part, in this process: then the page shows the finished job with its charts and result
    done = jobs.execute_job(jid)
    assert done["status"] == "succeeded", done["error"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("succeeded" in (p.proto.text or "") for p in at.get("progress"))
    assert len(at.get("plotly_chart")) >= 1
    r = done["result"]
    assert any(f"new model #{r['model_id']}" in s.value and f"Retrain #{r['retrain_id']}" in s.value
               for s in at.success)
    assert any(r["verdict"] == t.value for t in at.text)
    seeds = " ".join(c.value for c in at.caption)
    for m in r["seed_models"]:  # every seed's models, by id
        assert f"seed {m['seed']}: child #{m['child_id']}, control #{m['control_id']}, random pair " \
               f"#{m['random_control_id']}" in seeds
    table = at.dataframe[0].value
    assert {"plain control", "random-pair control", "recipe", "your choice"} <= set(table.columns)
    assert "val · selection (not evidence)" in list(table["held-out split"])


def test_a_test_shifted_pick_is_refused_at_the_pick_and_the_pair_stays(pinned):
    mid, uid, g, b = pinned
    shifted = [r for r in explaining.run_rows(explaining.latest_run(mid, "gradcam")["id"])
               if r["split"] == "test_shifted"][0]
    with pytest.raises(ValueError, match="from the test_shifted split: pick exemplars from train"):
        feedback.pick(uid, mid, shifted["image_id"], "good", explaining.latest_run(mid, "gradcam")["id"])
    assert feedback.current_pair(mid, uid)["good"]["image_id"] == g["image_id"]  # nothing lost
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "retrain")
    assert not at.exception, [e.value for e in at.exception]
    assert not at.button(key="rt_start").disabled


def test_retrain_page_without_a_pair_explains_what_to_do(pinned):
    mid, uid, g, b = pinned
    feedback.undo(uid, mid)
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "retrain")
    assert not at.exception
    assert any("Pin one good and one bad" in i.value for i in at.info)
    assert at.button(key="rt_start").disabled


def test_report_page_renders_for_a_parent_child_pair(pinned):
    mid, uid, g, b = pinned
    res = retrain(mid, "exbl", epochs=1, user_id=uid, seeds=1)
    ctl = res.control["model_id"]
    rnd = res.random_control["model_id"]
    at = open_page(app_test(user={"id": uid, "name": "tester"},
                            report_pair={"parent": mid, "child": res.model_id}), "report")
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="rp_child").value == res.model_id
    assert ctl not in at.selectbox(key="rp_child").options  # a control is not offered as a retrained child
    assert rnd not in at.selectbox(key="rp_child").options
    assert at.selectbox(key="rp_parent").value == mid
    assert any(t.value == res.verdict for t in at.text)
    assert len(at.dataframe) >= 3  # one table per held-out split (val, test, test_shifted) first; the probe panel follows
    table = at.dataframe[2].value
    assert list(table["measure"]) == ["accuracy", "mean AR", "mean AP", "mean wrong reason (WR)"]
    assert {"parent", "plain control", "random-pair control", "child", "child − plain control",
            "your choice (child − random pair)"} <= set(table.columns)
    assert len(at.get("plotly_chart")) >= 6  # accuracy, 3 histograms, ≥1 confusion matrix, history
    assert _n_images(at) == 16  # the 8 images whose AR changed most, before | after
    assert len(at.get("download_button")) == 1
    # the retrain's group: its figures over every seed (one seed here), described as such
    at.radio(key="rp_scope").set_value(f"retrain #{res.retrain_id}: every seed").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("means over every seed" in c.value for c in at.caption)


def test_report_html_is_self_contained(pinned):
    from services.retraining.report import compare, export_report

    mid, uid, g, b = pinned
    res = retrain(mid, "ce", epochs=1, user_id=uid, seeds=1, random_control=False)
    data = compare(mid, res.model_id)
    heldout = sum(1 for r in explaining.run_rows(explaining.latest_run(mid, "gradcam")["id"])
                  if r["split"] != "train")
    assert data["related"] and data["summary"]["parent"]["n"] == data["summary"]["child"]["n"] == heldout < 160
    assert {r["split"] for r in data["changed"]} <= {"val", "test", "test_shifted"}
    assert len(data["changed"]) == 8
    deltas = [abs(r["delta_ar"]) for r in data["changed"]]
    assert deltas == sorted(deltas, reverse=True)
    path = export_report(mid, res.model_id, user_id=uid)
    html = path.read_text()
    assert html.count("<img src='data:image/png;base64,") == 16  # 8 images × before / after
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inline
    assert not re.search(r"<script[^>]+src=['\"]https?://", html)  # nothing fetched from the network
    assert html_escape(data["evidence"]["verdict"]) in html and "<th>plain control</th>" in html
    assert "val · selection (not evidence)" in html
    assert "matched control (plain CE)" in html  # the control's fine-tune curves beside the child's
    assert "<h2>Shortcut probe</h2>" in html and "Artefact probe not available: not computed" in html
    from services.counterfactuals.probe import probe_rows

    html = export_report(mid, res.model_id, user_id=uid, probe=probe_rows([mid, res.model_id])).read_text()
    assert "changed · top-left" in html and f"after (child) #{res.model_id}" in html


def test_a_reader_is_refused_the_report_export_and_nothing_is_written(tmp_path):
    from services.retraining.report import export_report
    from services.team.access import set_role
    from services.team.audit_log import list_rows
    from services.team.roles import PermissionRefused
    from services.team.users import get_or_create_user

    admin = get_or_create_user("tester")  # the first user: admin
    reader = set_role(admin, "r1", "reader")["id"]
    with pytest.raises(PermissionRefused, match="role reader; to export needs a researcher") as refused:
        export_report(1, 2, out=tmp_path / "out" / "r.html", user_id=reader)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists() and list_rows(admin, action="export") == []
