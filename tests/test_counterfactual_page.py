"""AppTest: the counterfactual studio runs a tiny counterfactual job and shows the side-by-side row; a rating
is stored; stored results reopen; a gallery link (?image=ID) preselects the image."""
from __future__ import annotations

import pytest

from services.jobs.lifecycle import execute_job
from tests.helpers_app import app_test, open_page
from tests.test_counterfactual_service import make_world


def _markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.mark.slow
def test_studio_runs_a_tiny_job_and_shows_the_side_by_side_row():
    w = make_world("studio")
    at = app_test(user={"id": w["user_id"], "name": "tester"})
    at.query_params["image"] = str(w["image"]["id"])
    at = open_page(at, "counterfactuals")
    assert not at.exception, at.exception
    assert at.session_state["cf_image_id"] == w["image"]["id"]  # the gallery link preselected the image
    at.number_input(key="cf_opt_steps").set_value(3)
    at.number_input(key="cf_opt_t0").set_value(60)
    at.number_input(key="cf_opt_adv").set_value(5)
    at.multiselect(key="cf_gen_methods").set_value(["diffusion", "adversarial"])
    at.button(key="cf_gen_run").click().run()
    assert not at.exception, at.exception
    job_id = at.session_state["cf_gen_job"]
    job = execute_job(job_id)  # what the worker does
    assert job["status"] == "succeeded", job["error"]
    at.run()
    assert not at.exception, at.exception
    md = _markdown(at)
    for head in ("**Original**", "**Diffusion · Exemplar fast (noised start, early-stopped guidance, DDIM finish to t = 0)**", "**Affirmative**", "**Adversarial (pixel space)**",
                 "**Trajectory**"):
        assert head in md, head
    # original (+ masks) and, per generated column, its image and its |Δ| map; the trajectory frame
    captions = [i.caption for el in at.get("image") for i in el.proto.imgs]
    assert sum("|Δ|" in c for c in captions) >= 3, captions
    # every |Δ| map has its colour bar, whose caption gives the scale's top in grey levels
    bars = [c for c in captions if c.startswith("|Δ| 0 (left) → ") and c.endswith(" grey levels (right)")]
    assert len(bars) == sum(c.startswith("|Δ| ") and "grey levels" not in c for c in captions), captions
    assert any(c.startswith("x̂₀ estimate at t =") for c in captions)  # an estimate is labelled as one
    assert any("bpd" in c.value and "UNet passes" in c.value and "guided" in c.value and "t = 0" in c.value
               for c in at.caption)
    assert any(c.value.startswith("independent classifier") for c in at.caption)
    # rate the diffusion result
    rows = sorted(__import__("services.counterfactuals.runs", fromlist=["x"]).list_counterfactuals(job_id=job_id),
                  key=lambda r: r["id"])
    diff = next(r for r in rows if r["method"] == "diffusion")
    key = f"cf_gen_m{w['model_id']}_diffusion_{diff['id']}_rate"
    at.slider(key=f"{key}_realism").set_value(4)
    at.radio(key=f"{key}_plausible").set_value("yes")
    at.text_area(key=f"{key}_comment").set_value("edits the right lung")
    at.button(key=f"FormSubmitter:{key}_form-Save rating").click().run()
    assert not at.exception, at.exception
    from services.counterfactuals.runs import list_annotations

    anns = list_annotations(diff["id"])
    assert len(anns) == 1 and anns[0]["rating"] == 4 and anns[0]["plausible"] == "yes"
    assert anns[0]["comment"] == "edits the right lung"
    # the stored-results tab lists both and reopens one
    table = at.dataframe[0].value
    assert set(table["id"]) == {r["id"] for r in rows}
    assert len(at.get("download_button")) == 1  # the zip export, for the tester (an admin)
    # a reader sees the stored results but no export (export_zip refuses a reader too)
    from services.team.access import set_role

    reader = set_role(w["user_id"], "r1", "reader")["id"]
    at = open_page(app_test(user={"id": reader, "name": "r1"}), "counterfactuals")
    assert not at.exception, at.exception
    assert not at.get("download_button")
    assert any("Exporting needs a researcher or an admin (you are a reader)" in c.value for c in at.caption)


def test_a_linked_image_value_is_shown_as_plain_text():
    """A ?image= value that is not an image of the dataset is named in the warning as typed, never as Markdown."""
    w = make_world("qp")
    at = app_test(user={"id": w["user_id"], "name": "tester"})
    at.query_params["image"] = "**bold** [link](http://example.com)"
    at = open_page(at, "counterfactuals")
    assert not at.exception, at.exception
    warnings = [x.value for x in at.warning]
    assert any("\\*\\*bold\\*\\*" in v and "\\[link\\]\\(http" in v for v in warnings), warnings
