"""AppTest: the app shell and every page render on an empty database without an exception."""
from __future__ import annotations

import pytest

from services.jobs import lifecycle as jobs
from services.team.users import get_or_create_user
from tests.helpers_app import app_test, open_page

PAGES = ["gallery", "retrain", "report", "counterfactuals", "evaluate", "annotations", "data_models", "jobs"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_empty_database(page):
    at = app_test().run()
    assert not at.exception
    open_page(at, page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title, f"{page} has no title"


def test_sidebar_creates_user_and_warns_without_worker():
    at = app_test().run()
    assert any("No worker is running" in w.value for w in at.sidebar.warning)
    at.text_input(key="sb_new_user").input("Dr. Ada")  # a form (issue 16): typed, then one submit
    at.button(key="sb_create_user").click().run()
    assert at.session_state["user"]["name"] == "Dr. Ada"
    assert at.selectbox(key="sb_user").value == "Dr. Ada" and at.text_input(key="sb_new_user").value == ""
    assert any("No dataset yet" in c.value for c in at.sidebar.caption)


def test_jobs_page_lists_jobs_and_cancels_one():
    uid = get_or_create_user("tester")
    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, uid)
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "jobs")  # a cancel names who asked
    assert not at.exception
    assert any(f"job {jid}" in (p.proto.text or "") for p in at.get("progress"))
    at.button(key=f"jobs_cancel_{jid}").click().run()
    assert jobs.get_job(jid)["status"] == "cancelled"
