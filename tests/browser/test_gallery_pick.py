"""In Chromium: pick a good and a bad exemplar on the gallery and see the pinned pair; a keyboard shortcut marks."""
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from db.models import Feedback, User
from services.platform.database import session
from services.explanations.explaining import query_explanations
from tests.browser.harness import (act_and_settle, card_option, exceptions_on, live_app, page, pick_user,  # noqa: F401
                                   wait_idle)
from tests.helpers_explain import dataset_and_model, fake_run

pytestmark = pytest.mark.browser


def button(page, key: str):
    """The visible button of a widget key (Streamlit also renders a hidden copy for measuring its width)."""
    return page.locator(f".st-key-{key}[data-stale='false'] button:visible")


def click(page, key: str) -> None:
    """Click the button with this widget key once the rerun has settled (no stale copy left)."""
    btn = button(page, key)
    expect(btn).to_have_count(1)
    expect(btn).to_be_enabled()
    act_and_settle(page, btn.click)


def click_card(page, image_id: int, action: str) -> None:
    """Click Good / Bad / Detail on a card once the rerun has settled."""
    opt = card_option(page, image_id, action)
    expect(opt).to_have_count(1)
    act_and_settle(page, opt.click)  # the click's run has stored the pick before the test reads the database


def picks() -> list[tuple[str, int, str]]:
    with session() as s:
        return [(f.kind, f.image_id, s.get(User, f.user_id).name)
                for f in s.scalars(select(Feedback).where(Feedback.undone_at.is_(None)).order_by(Feedback.id))]


def test_pick_good_and_bad_and_see_the_pinned_pair(page, live_app):
    ds_id, mid = dataset_and_model(n=20, size=32)
    rid = fake_run(ds_id, mid)
    rows, _ = query_explanations(rid, "ar", False, limit=12)  # the first page of cards
    train = [r for r in rows if r["split"] == "train"]  # a pick accepts train images only
    good, bad, third = train[-1], train[0], train[1]
    page.goto(live_app.url)
    wait_idle(page)
    pick_user(page, "radiologist")
    page.get_by_role("heading", name="Explanation gallery").wait_for()
    assert exceptions_on(page) == []

    click_card(page, good["image_id"], "Good")
    click_card(page, bad["image_id"], "Bad")
    assert exceptions_on(page) == []
    assert picks() == [("good", good["image_id"], "radiologist"), ("bad", bad["image_id"], "radiologist")]
    pinned = page.get_by_text("Chosen exemplar pair").locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
    pinned.get_by_text(good["path"]).first.wait_for()
    pinned.get_by_text(bad["path"]).first.wait_for()
    expect(button(page, "g_retrain")).to_be_enabled()

    # keyboard: open a card's detail view and press G to make it the good exemplar
    click_card(page, third["image_id"], "Detail")
    expect(button(page, "g_det_good")).to_have_count(1)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    act_and_settle(page, lambda: page.keyboard.press("g"))
    assert exceptions_on(page) == []
    expect(card_option(page, third["image_id"], "Good")).to_have_attribute("aria-pressed", "true")  # now the good one
    assert picks()[-1] == ("good", third["image_id"], "radiologist")
