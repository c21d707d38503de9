"""In Chromium (issue 16): the ranked gallery is the first screen with no user action; "Create user" works with
Enter; a reload keeps user, model and gallery settings (URL query parameters); a corrupt file's import error names
the file in plain words."""
from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect

from services.data.datasets import synth_dataset
from services.explanations.explaining import query_explanations
from services.team.users import list_users
from tests.browser.harness import choose, exceptions_on, live_app, page, wait_idle  # noqa: F401
from tests.helpers_explain import dataset_and_model, fake_run

pytestmark = pytest.mark.browser


def cards(page):
    """The cards the gallery's card grid shows now (pages/parts/card_grid.py). The grid is one element from run to
    run, so what a run draws into it is waited for with expect(), not read at once."""
    return page.locator(".st-key-g_cards[data-stale='false'] .card")


def open_as(page, url: str, user: str) -> None:
    """Open the app and create / pick `user` with one Enter in the sidebar."""
    page.goto(url)
    wait_idle(page)
    box = page.get_by_label("…or create a user")
    box.fill(user)
    box.press("Enter")
    wait_idle(page)


def test_ranked_gallery_first_enter_creates_user_and_reload_keeps_state(page, live_app):
    ds_id, mid = dataset_and_model(n=40, size=32)
    rid = fake_run(ds_id, mid)
    top = str(query_explanations(rid, "ar", True, limit=1)[0][0]["image_id"])  # the highest AR first, descending
    before = [u["name"] for u in list_users()]  # the set-up's own identity (the test process's local user)
    page.goto(live_app.url)
    wait_idle(page)
    page.get_by_role("heading", name="Explanation gallery").wait_for()
    expect(cards(page)).to_have_count(12, timeout=60_000)  # the ranked grid, no click needed
    page.get_by_text("Start here").first.wait_for()

    box = page.get_by_label("…or create a user")
    box.fill("alice")
    box.press("Enter")  # Enter submits the form: one action creates the user
    wait_idle(page)
    page.wait_for_function("() => location.search.includes('user=alice')")
    page.get_by_text("(of alice)").first.wait_for()  # the pinned pair is now alice's
    assert sorted(u["name"] for u in list_users()) == sorted([*before, "alice"])  # one user more: alice

    page.get_by_test_id("stRadio").filter(has_text="Order").get_by_text("descending").click()
    wait_idle(page)
    page.wait_for_function("() => location.search.includes('order=descending')")
    # the URL is saved before the cards are drawn in the same run: wait for the grid itself to show the new order
    expect(cards(page).first).to_have_attribute("data-image-id", top)
    page.reload()
    wait_idle(page)
    page.get_by_role("heading", name="Explanation gallery").wait_for()
    assert "user=alice" in page.url and f"model={mid}" in page.url and "order=descending" in page.url
    page.get_by_text("(of alice)").first.wait_for()
    expect(page.get_by_role("radio", name="descending")).to_be_checked()
    expect(cards(page)).to_have_count(12, timeout=60_000)
    expect(cards(page).first).to_have_attribute("data-image-id", top)  # the order survived the reload
    assert exceptions_on(page) == []


def test_a_corrupt_png_is_named_in_one_plain_line(page, live_app, tmp_path):
    root = synth_dataset("t", n=16, size=32, user_id=None)["root"]
    imp = tmp_path / "imp"
    shutil.copytree(root, imp)
    bad = sorted((imp / "Normal" / "images").glob("*.png"))[0]
    bad.write_text("not a png")
    open_as(page, live_app.url, "researcher")
    page.get_by_test_id("stSidebarNav").get_by_text("Data & models", exact=True).click()
    wait_idle(page)
    page.get_by_label("Folder or .zip on the server").fill(str(imp))
    page.get_by_label("Name", exact=True).last.fill("imp")
    page.get_by_role("button", name="Import", exact=True).click()
    err = page.get_by_text("import refused").first
    err.wait_for(timeout=120_000)
    text = err.inner_text()
    assert bad.name in text and "object at 0x" not in text and "Error" not in text and "\n" not in text.strip()


def test_cancel_from_the_gallery_stops_a_running_job_and_greys_its_bar(page, live_app):
    """Cancel on a running explain job: the worker stops it (by itself or its backstop) and the gallery's job panel
    reads "cancelled" with its bar where it stopped; the row says cancelled and no run was stored."""
    from services.explanations.explaining import list_runs
    from services.jobs.lifecycle import list_jobs

    ds_id, mid = dataset_and_model(n=400, size=64)
    fake_run(ds_id, mid)
    open_as(page, live_app.url, "reader")
    page.get_by_text("Compute explanations (explain job)").click()
    wait_idle(page)
    choose(page, "Method", "Occlusion")
    wait_idle(page)
    page.get_by_role("button", name="Start explain job").click()
    page.get_by_text("running").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Cancel").first.click()
    page.get_by_text("cancelled").first.wait_for(timeout=60_000)
    job = next(j for j in list_jobs() if j["kind"] == "explain")  # newest first
    assert job["status"] == "cancelled" and job["progress"] < 1.0
    assert len(list_runs(mid)) == 1  # only the ranking that was there: the cancelled run stored nothing
    assert exceptions_on(page) == []
