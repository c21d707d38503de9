"""In Chromium (issue 25): a reader presses six answers in a row, each as soon as the next item's buttons show; all
six are stored, on the right items, and the screen counts them alike everywhere. The item's image and map are one
picture."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from services.reading import studies
from services.team.access import set_role
from services.team.users import get_or_create_user
from tests.browser.harness import exceptions_on, live_app, page, wait_idle  # noqa: F401
from tests.helpers_explain import dataset_and_model, fake_run

pytestmark = pytest.mark.browser

PRESSES = ["1", "3", "3", "5", "4", "2"]
READY_JS = """(label) => {
  const item = [...document.querySelectorAll('[data-testid="stText"]')].some(e => e.innerText.startsWith(label));
  const btn = document.querySelector('.st-key-rd_ans_0[data-stale="false"] button');
  return item && btn && !btn.disabled;
}"""


def test_six_fast_answers_are_all_stored(page, live_app):
    admin = get_or_create_user("tester")
    set_role(admin, "r2", "reader")
    ds, mid = dataset_and_model(n=24, name="fast")
    res = studies.create_study(admin, [("How well does the map justify the label?", "ordinal:1-5")], ["r2"],
                               run_id=fake_run(ds, mid), n=6)
    sid = res["study_id"]
    page.goto(live_app.url + "/reading?user=r2")
    wait_idle(page)
    for n, key in enumerate(PRESSES):
        # item n + 1 and its answer buttons are drawn by the current run (not stale copies): press at once, with
        # no wait for the run to settle
        page.wait_for_function(READY_JS, arg=f"Item {n + 1} of 6")
        page.keyboard.press(key)
    page.get_by_text("6 of 6 answered").first.wait_for()
    wait_idle(page)
    assert exceptions_on(page) == []
    wl = studies.worklist(get_or_create_user("r2"), sid)
    assert [list(i["answers"].values()) for i in wl] == [[k] for k in PRESSES]
    assert studies.my_studies(get_or_create_user("r2"))[0]["answered"] == 6
    page.get_by_text("Every item is answered").first.wait_for()
    page.get_by_text(f"Your studies: study {sid} 6/6").first.wait_for()  # the study list counts alike
