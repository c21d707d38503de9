"""AppTest of issue 16's page pieces: the ranked gallery is the first screen, one-submit "Create user", a reload
(the URL's query parameters) keeps user, dataset, model and gallery settings, and a cancelled job's grey bar."""
from __future__ import annotations

from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest

from db.models import utcnow
from services.team.users import get_or_create_user, list_users
from tests.helpers_app import ENTRY, app_test, card_ids, card_texts, open_filters
from tests.helpers_explain import dataset_and_model, fake_run



@pytest.fixture
def ranked():
    ds_id, mid = dataset_and_model(n=40, size=32)
    return ds_id, mid, fake_run(ds_id, mid)


def test_the_first_screen_is_the_ranked_gallery_with_a_start_here_strip(ranked):
    at = app_test().run()  # no user, no click: the default page
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Explanation gallery"
    assert len(card_ids(at)) == 12
    assert any("Start here" in i.value for i in at.info)
    metrics = " ".join(h.value for h in at.html if 'class="metric"' in h.value)  # the run's numbers: one st.html
    shown = " ".join(m.value for m in at.markdown) + metrics + card_texts(at)
    assert "mean AR" in shown and "None" not in shown and "NaN" not in shown  # undefined metrics read n/a


def test_the_first_screen_skips_the_independent_classifier_trained_after_the_baseline(ranked):
    """The demo trains its independent classifier B last; the first screen stays on the ranked baseline."""
    from services.models.catalog import list_models
    from services.models.independent import INDEPENDENT_SUFFIX
    from services.models.registry import register_model

    ds_id, mid, _ = ranked
    a = list_models("classifier", ds_id)[0]
    b = register_model(name="g" + INDEPENDENT_SUFFIX, arch="simple_cnn", checkpoint=a["checkpoint"], dataset_id=ds_id,
                       config=a["config"])
    assert b > mid
    at = app_test().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["model"]["id"] == mid
    assert len(card_ids(at)) == 12


def test_create_user_in_one_submit_and_it_lands_in_the_url():
    at = app_test().run()
    at.text_input(key="sb_new_user").input("alice")
    at.button(key="sb_create_user").click().run()  # the form's submit = Enter or one click
    assert not at.exception, [e.value for e in at.exception]
    assert [u["name"] for u in list_users()] == ["alice"]
    assert at.session_state["user"]["name"] == "alice"
    assert at.query_params.get("user") == "alice"
    # an empty submit after that changes nothing and shows no error
    at.button(key="sb_create_user").click().run()
    assert not at.error and at.session_state["user"]["name"] == "alice"


def test_a_reload_keeps_user_dataset_model_and_gallery_settings(ranked):
    ds_id, mid, rid = ranked
    uid = get_or_create_user("tester")
    at = app_test(user={"id": uid, "name": "tester"}).run()
    at.radio(key="g_order").set_value("descending").run()
    open_filters(at).multiselect(key="g_true").set_value([1]).run()
    at.selectbox(key="g_correct").set_value("correct").run()
    at.slider(key="g_opacity").set_value(0.7).run()
    kept = card_ids(at)
    qp = dict(at.query_params)
    assert qp["user"] == "tester" and qp["model"] == str(mid) and qp["order"] == "descending" and qp["true"] == "1"

    fresh = AppTest.from_file(str(ENTRY), default_timeout=120)  # a new browser session: only the URL is left
    fresh.query_params.update(qp)
    fresh.session_state["g_more"] = True  # the filter panel open, to read its widgets
    fresh.run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    assert fresh.session_state["user"]["name"] == "tester"
    assert fresh.session_state["model"]["id"] == mid and fresh.session_state["dataset"]["id"] == ds_id
    assert fresh.radio(key="g_order").value == "descending" and fresh.multiselect(key="g_true").value == [1]
    assert fresh.selectbox(key="g_correct").value == "correct" and fresh.slider(key="g_opacity").value == 0.7
    assert card_ids(fresh) == kept


def _job_script():
    import streamlit as st

    from pages.parts.job_progress import render_job

    render_job(st.session_state["job"], "k", chart=False)


def _job(status: str, progress: float, seconds: float) -> dict:
    t0 = utcnow() - timedelta(seconds=seconds)
    return {"id": 3, "kind": "explain", "status": status, "progress": progress, "message": status,
            "started_at": t0.isoformat(), "finished_at": None if status == "running" else utcnow().isoformat(),
            "cancel_requested": status == "cancelled", "error": None, "metrics": []}


def test_a_cancelled_bar_is_grey_and_shows_how_far_it_got():
    at = AppTest.from_function(_job_script)
    at.session_state["job"] = _job("cancelled", 0.4, 10)
    at.run()
    assert not at.exception
    html = " ".join(m.value for m in at.markdown)
    assert "#9E9E9E" in html and "width:40.0%" in html
    assert any("stopped at 40%" in c.value for c in at.caption)


def test_a_running_job_shows_an_eta_from_its_rate():
    at = AppTest.from_function(_job_script)
    at.session_state["job"] = _job("running", 0.25, 20)
    at.run()
    text = at.get("progress")[0].proto.text
    assert "elapsed" in text and "left" in text and "25%" in text
