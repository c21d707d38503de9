"""AppTest: the reading worklist (blinded, answers stored as versions), the studies page's agreement, the audit
page for admins only, pages hidden from readers and a reader's refusal shown in the page."""
from __future__ import annotations

import pytest

from services.team import audit, audit_log

from services.jobs import lifecycle as jobs

from services.reading import studies

from services.reading import results as study_results
from services.team.users import get_or_create_user
from services.team.access import set_role
from tests.helpers_app import app_test, open_page
from tests.helpers_explain import dataset_and_model, fake_run


@pytest.fixture
def study():
    admin = get_or_create_user("tester")
    ids = {"admin": admin}
    for name, role in (("res", "researcher"), ("r1", "reader"), ("r2", "reader")):
        ids[name] = set_role(admin, name, role)["id"]
    ds, mid = dataset_and_model(n=24, name="hidden-model-name")
    res = studies.create_study(ids["res"], [("Does the map justify the label?", "nominal:good,bad")], ["r1", "r2"],
                               run_id=fake_run(ds, mid), n=4)
    return ids, res


def _texts(at) -> str:
    parts = [p.proto.text for p in at.get("progress")] + [e.value for kind in ("text", "markdown", "caption", "title", "success", "info") for e in getattr(at, kind)]
    parts += [b.label for b in at.button] + [str(o) for s in at.selectbox for o in s.options]
    return "\n".join(str(p) for p in parts)


def test_reader_worklist_answers_blinded(study):
    ids, res = study
    studies.answer(ids["r2"], res["study_id"], res["items"][0], "bad")  # the other reader's answer
    at = open_page(app_test(user={"id": ids["r1"], "name": "r1"}), "reading")
    assert not at.exception, [e.value for e in at.exception]
    shown = _texts(at)
    for leak in ("gradcam", "hidden-model-name", "AR", "soft", "your answer"):  # r2's answer is not r1's
        assert leak not in shown
    assert "Does the map justify the label?" in shown and "0 of 4 answered" in shown
    # the image and its map are one picture: a redraw can never pair one item's image with another's map
    assert [i.caption for el in at.get("image") for i in el.proto.imgs] == ["image (left) · explanation map (right)"]
    sid = res["study_id"]
    at.button(key="rd_ans_0").click().run()  # unit 0: "1 · good"
    at.button(key="rd_ans_1").click().run()  # unit 1: "2 · bad"
    at.button(key="rd_back").click().run()
    at.button(key="rd_ans_0").click().run()  # changed: a new version, the old kept
    assert not at.exception
    wl = {i["item_id"]: i for i in studies.worklist(ids["r1"], res["study_id"])}
    answered = [v for i in wl.values() for v in i["answers"].values()]
    assert sorted(answered) == ["good", "good"]
    hist = study_results.answer_rows(ids["res"], res["study_id"], history=True)
    assert [r["version"] for r in hist if r["reader"] == "r1"] == [1, 1, 2]
    assert "2 of 4 answered" in _texts(at)
    warn = " ".join(w.value for w in at.warning)  # the screen names what is still open and returns to it
    assert "2 not answered yet: item 3, item 4" in warn
    at.button(key=f"rd_goto_{sid}_3").click().run()
    assert "Item 4 of 4" in _texts(at)


def test_answers_in_a_row_are_all_stored_and_counted_alike(study):
    """A press is stored for the item it was drawn with and only while that item is current; the position moves to
    the next open item; the page and the study list count a skip alike."""
    ids, res = study
    sid = res["study_id"]
    at = open_page(app_test(user={"id": ids["r1"], "name": "r1"}), "reading")
    at.button(key="rd_ans_0").click().run()
    at.button(key="rd_ans_1").click().run()
    at.button(key="rd_skip").click().run()  # a skip is an answer ("skipped"), counted and named so
    at.button(key="rd_ans_1").click().run()
    wl = studies.worklist(ids["r1"], sid)
    assert [list(i["answers"].values()) for i in wl] == [["good"], ["bad"], [None], ["bad"]]
    assert "4 of 4 answered (1 skipped)" in _texts(at)
    assert studies.my_studies(ids["r1"])[0]["answered"] == 4  # the study list counts the same way
    assert any(f"study {sid} 4/4" in c.value for c in at.caption)


def test_studies_page_shows_library_agreement_and_readers_do_not_see_it(study):
    ids, res = study
    for it, a, b in zip(res["items"], ["good", "good", "bad", "bad"], ["good", "bad", "bad", "bad"]):
        studies.answer(ids["r1"], res["study_id"], it, a)
        studies.answer(ids["r2"], res["study_id"], it, b)
    want = study_results.agreement(ids["res"], res["study_id"])
    at = open_page(app_test(user={"id": ids["res"], "name": "res"}), "studies")
    assert not at.exception, [e.value for e in at.exception]
    df = at.dataframe[0].value
    alpha = df[df["statistic"] == "Krippendorff's α"].iloc[0]  # words on screen, identifiers in the exports
    assert alpha["value"] == pytest.approx(want["krippendorff_alpha"]["value"])
    assert alpha["95 % low"] == pytest.approx(want["krippendorff_alpha"]["low"])
    kappa = df[df["statistic"] == "Cohen's κ"].iloc[0]
    assert kappa["value"] == pytest.approx(want["cohen_kappa"][0]["value"]) and kappa["readers"] == "r1 / r2"
    reader = app_test(user={"id": ids["r1"], "name": "r1"}).run()
    for hidden in ("studies", "audit", "retrain", "data_models"):  # hidden from readers (services refuse anyway)
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            reader.switch_page(f"../pages/{hidden}.py")


def test_audit_page_for_admins_and_role_change(study):
    ids, res = study
    at = open_page(app_test(user={"id": ids["admin"], "name": "tester"}), "audit")
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert {"study.create", "user.role"} <= set(table["action"])
    at.selectbox(key="au_user").set_value("res").run()
    assert set(at.dataframe[0].value["user"]) == {"res"}
    at.text_input(key="au_role_user").input("r2")  # a form: the name and role travel with the one click
    at.selectbox(key="au_role_role").set_value("researcher")
    at.button(key="au_role_set").click().run()
    assert any("role set to researcher" in m.value and "r2" in m.value for m in at.success)
    rows = audit_log.list_rows(ids["admin"], action="user.role", user="tester")
    assert rows[-1]["object"] == "user:r2" and rows[-1]["before"] == {"role": "reader"}
    res_at = open_page(app_test(user={"id": ids["res"], "name": "res"}), "gallery")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        res_at.switch_page("../pages/audit.py")  # researchers do not read the audit log


def test_cancel_shows_only_where_it_would_be_accepted(study):
    ids, _ = study
    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, ids["res"])
    at = open_page(app_test(user={"id": ids["r1"], "name": "r1"}), "jobs")
    assert not at.exception, [e.value for e in at.exception]
    assert f"jobs_cancel_{jid}" not in [b.key for b in at.button]  # a reader: no Cancel on another user's job
    own = open_page(app_test(user={"id": ids["res"], "name": "res"}), "jobs")
    own.button(key=f"jobs_cancel_{jid}").click().run()  # the owner cancels in one click
    assert jobs.get_job(jid)["status"] == "cancelled" or jobs.get_job(jid)["cancel_requested"]


def test_a_reader_deep_link_to_a_hidden_page_says_why(study):
    from streamlit.testing.v1 import AppTest

    ids, _ = study
    script = ("from pathlib import Path\nfrom pages.parts.navigation import refusal_page\n"
              "refusal_page('Retrain', 'exbl', {'name': 'r1 *bold*', 'role': 'reader'}, Path('pages/gallery.py'))()")
    at = AppTest.from_string(script, default_timeout=60).run()
    text = " ".join(w.value for w in at.warning)
    assert "Retrain needs the researcher role (to start a retrain)" in text and "with the reader role" in text
    assert "r1 \\*bold\\*" in text  # the user name as plain text


def test_the_menu_follows_a_user_switch_at_once(study):
    ids, _ = study
    at = app_test(user={"id": ids["admin"], "name": "tester"}).run()
    at.sidebar.selectbox(key="sb_user").set_value("r1").run()  # one switch: the next run is already r1's
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("../pages/retrain.py")


def test_local_mode_label_and_role_in_sidebar(study):
    ids, _ = study
    at = app_test(user={"id": ids["r1"], "name": "r1"}).run()
    assert any("local mode — no sign-in" in c.value for c in at.sidebar.caption)
    assert any("role: reader" in t.value for t in at.sidebar.text)


def test_a_reader_sees_no_retrain_or_explain_controls_in_the_gallery(study):
    ids, _ = study
    at = open_page(app_test(user={"id": ids["r1"], "name": "r1"}), "gallery")
    assert not at.exception, [e.value for e in at.exception]
    keys = [b.key for b in at.button]
    assert "g_retrain" not in keys and "g_start" not in keys
    assert any("readers do not retrain" in c.value for c in at.caption)
    assert not any(e.label.startswith("Compute explanations") for e in at.expander)
    res = open_page(app_test(user={"id": ids["res"], "name": "res"}), "gallery")
    assert "g_retrain" in {b.key for b in res.button}
    assert any(e.label.startswith("Compute explanations") for e in res.expander)
    res.session_state["g_explain"] = True  # a click on the closed panel: its controls are drawn only while it is open
    assert "g_start" in {b.key for b in res.run().button}


def test_a_press_from_a_previous_items_buttons_is_refused_in_words_and_stores_nothing(study):
    """A key pressed before the next item's buttons were drawn reaches the previous item's callback (the unit it was
    drawn for travels in its args): it must not overwrite that item nor skip the one now shown."""
    ids, res = study
    sid = res["study_id"]
    at = open_page(app_test(user={"id": ids["r1"], "name": "r1"}), "reading")
    at.session_state[f"rd_pos_{sid}"] = 1  # the page moved on to unit 1 while unit 0's buttons were on screen
    at.button(key="rd_ans_1").click().run()  # drawn for unit 0
    assert any("was not stored" in e.value for e in at.error)
    assert all(not i["answers"] for i in studies.worklist(ids["r1"], sid))
    assert "Item 2 of 4" in _texts(at)
