"""Main shell in a real browser: every page opens through the navigation with no exception box, worker seen alive."""
import pytest

from tests.browser.harness import exceptions_on, live_app, page, pick_user, wait_idle  # noqa: F401

pytestmark = pytest.mark.browser

PAGES = ["Gallery", "Retrain", "Before / after", "Counterfactuals", "Evaluate", "Annotations", "Data & models", "Jobs"]


def test_every_page_opens_without_exception(page, live_app):
    page.goto(live_app.url)
    wait_idle(page)
    pick_user(page, "radiologist")
    assert page.get_by_text("Worker alive").first.is_visible(timeout=20_000)
    for title in PAGES:
        page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
        wait_idle(page)
        page.wait_for_timeout(300)
        assert exceptions_on(page) == [], f"exception on {title}: {exceptions_on(page)}"
        assert page.get_by_role("heading").first.is_visible()


def test_a_deep_link_opened_first_after_a_start_runs_the_app(page, live_app):
    """The first page a fresh server serves is a deep link (a bookmark, the gallery's link to the studio): it still
    goes through app.py's navigation and sidebar, never Streamlit's pages/-folder mode."""
    page.goto(live_app.url + "/counterfactuals?user=radiologist")
    wait_idle(page)
    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_text("Gallery", exact=True).wait_for(timeout=30_000)
    assert nav.get_by_text("common", exact=True).count() == 0  # pages/common.py is a module, not a page
    page.get_by_role("heading", name="Counterfactual studio").wait_for(timeout=30_000)
    page.get_by_text("…or create a user").first.wait_for(timeout=30_000)  # app.py's sidebar ran
