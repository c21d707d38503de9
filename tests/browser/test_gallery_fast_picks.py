"""In Chromium (issue 25): Good on one card, then Bad on another while the page is still redrawing after the first
click (no wait for the run to settle): both picks are stored, once each, and the cards show them. With one
segmented control a card, a control value the browser had not yet seen reset once stored a third pick nobody made;
the card grid now numbers its clicks and the server applies each number once (pages/parts/card_grid.py)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from db.models import Feedback
from services.explanations.explaining import query_explanations
from services.platform.database import session
from tests.browser.harness import (act_and_settle, card_control, card_option, exceptions_on,  # noqa: F401
                                   live_app, page, pick_user, wait_idle)
from tests.helpers_explain import dataset_and_model, fake_run

pytestmark = pytest.mark.browser

# from the first click to the second: inside the first click's rerun; None: both in one browser task, so both reach
# the server before it answers either (Streamlit keeps only the newest state a widget sends: the log keeps both)
DELAYS_MS = [None, 0, 30, 80, 150, 300]


def picks() -> list[tuple[str, int]]:
    with session() as s:
        return [(f.kind, f.image_id) for f in s.scalars(select(Feedback).order_by(Feedback.id))]


def test_a_second_pick_during_the_redraw_is_stored(page, live_app):
    ds_id, mid = dataset_and_model(n=24, size=32)
    rid = fake_run(ds_id, mid)
    rows, _ = query_explanations(rid, "ar", False, limit=12)
    train = [r["image_id"] for r in rows if r["split"] == "train"]
    paths = {r["image_id"]: r["path"] for r in rows}
    page.goto(live_app.url)
    wait_idle(page)
    pick_user(page, "radiologist")
    page.get_by_role("heading", name="Explanation gallery").wait_for()
    want = []
    for k, delay in enumerate(DELAYS_MS):
        good, bad = train[(2 * k) % len(train)], train[(2 * k + 1) % len(train)]
        expect(card_option(page, good, "Good")).to_have_count(1)

        def both() -> None:
            if delay is None:
                first, second = card_option(page, good, "Good"), card_option(page, bad, "Bad")
                page.evaluate("([a, b]) => { a.click(); b.click(); }",
                              [first.element_handle(), second.element_handle()])
                return
            card_option(page, good, "Good").click()
            page.wait_for_timeout(delay)  # the first click's run is under way (no wait for it to settle)
            card_control(page, bad, stale_too=True).get_by_role("button", name="Bad", exact=True).click()

        act_and_settle(page, both)
        want += [("good", good), ("bad", bad)]
        pinned = page.get_by_text("Chosen exemplar pair").locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
        pinned.get_by_text(paths[bad]).first.wait_for()  # the bad pick is drawn by the run that stored it
        expect(card_option(page, bad, "Bad")).to_have_attribute("aria-pressed", "true")
        expect(card_option(page, good, "Good")).to_have_attribute("aria-pressed", "true")
        assert picks() == want, f"after a second click {delay} ms after the first"
    assert exceptions_on(page) == []
