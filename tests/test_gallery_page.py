"""AppTest of the gallery: sorting and filtering change the order, good / bad clicks write feedback rows with the
current user, the pinned pair, suggest, undo, annotation and the detail view."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.models import Annotation, Feedback
from services.platform.database import session
from services.explanations.explaining import query_explanations
from services.team.users import get_or_create_user
from tests.helpers_app import (app_test, card_action, card_ids, card_shown, card_texts, open_filters,
                               open_page, send_clicks, train_only)
from tests.helpers_explain import dataset_and_model, fake_run


@pytest.fixture
def gallery():
    ds_id, mid = dataset_and_model(n=40, size=32)
    rid = fake_run(ds_id, mid)
    uid = get_or_create_user("tester")
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "gallery")
    assert not at.exception, [e.value for e in at.exception]
    return at, rid, mid, uid


def test_sorting_changes_the_order(gallery):
    at, rid, _, _ = gallery
    asc = card_ids(at)
    assert len(asc) == 12  # the default page size
    ref, total = query_explanations(rid, "ar", False, limit=12)
    assert total == 40 and asc == [r["image_id"] for r in ref]
    ars = [r["ar"] for r in ref]
    assert ars == sorted(ars)
    at.radio(key="g_order").set_value("descending").run()
    desc = card_ids(at)
    assert desc != asc
    ref_d, _ = query_explanations(rid, "ar", True, limit=12)
    assert desc == [r["image_id"] for r in ref_d]
    at.selectbox(key="g_sort").set_value("prob").run()
    assert card_ids(at) == [r["image_id"] for r in query_explanations(rid, "prob", True, limit=12)[0]]
    at.number_input(key="g_page").set_value(2).run()
    assert not at.exception
    assert card_ids(at) == [r["image_id"] for r in query_explanations(rid, "prob", True, limit=12, offset=12)[0]]


def test_filtering_changes_the_order(gallery):
    at, rid, _, _ = gallery
    before = card_ids(at)
    assert "g_correct" not in [w.key for w in at.selectbox]  # the filters: in a panel drawn only while open
    open_filters(at).selectbox(key="g_correct").set_value("wrong").run()
    wrong = card_ids(at)
    assert wrong and wrong != before
    rows = {r["image_id"]: r for r in query_explanations(rid, limit=None)[0]}
    assert all(not rows[i]["correct"] for i in wrong)
    assert len(wrong) == min(12, sum(not r["correct"] for r in rows.values()))  # one page of the wrong ones
    at.selectbox(key="g_correct").set_value("all").run()
    at.multiselect(key="g_true").set_value([1]).run()
    assert card_ids(at) and all(rows[i]["label"] == 1 for i in card_ids(at))
    # the settings survive a visit to another page
    at.radio(key="g_order").set_value("descending").run()
    kept = card_ids(at)
    at = open_page(open_page(at, "retrain"), "gallery")
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="g_order").value == "descending" and card_ids(at) == kept
    captions = " ".join(c.value for c in at.caption)
    assert "filtered by true class" in captions  # named above the cards while the panel is closed
    assert open_filters(at).multiselect(key="g_true").value == [1] and card_ids(at) == kept


def test_good_and_bad_clicks_write_feedback_with_the_current_user(gallery):
    at, rid, mid, uid = gallery
    ids = train_only(card_ids(at))
    card_action(at, ids[-1], "Good")
    card_action(at, ids[1], "Bad")
    assert not at.exception
    with session() as s:
        rows = s.scalars(select(Feedback).order_by(Feedback.id)).all()
        assert [(f.kind, f.image_id, f.user_id, f.model_id, f.run_id, f.undone_at) for f in rows] == [
            ("good", ids[-1], uid, mid, rid, None), ("bad", ids[1], uid, mid, rid, None)]
    pair = " ".join(h.value for h in at.html if "card-text" in h.value)  # the pinned pair's slots: st.html too
    assert "✅ good: " in pair and "❌ bad: " in pair
    # each card's buttons show its pick; the others show nothing selected
    assert [card_shown(at, i) for i in (ids[-1], ids[1], ids[0])] == ["Good", "Bad", None]
    assert at.button(key="g_retrain").disabled is False
    at.button(key="g_undo").click().run()
    assert card_shown(at, ids[1]) is None
    # Good again on the good card changes nothing and says how to take a pick back
    card_action(at, ids[-1], "Good")
    assert card_shown(at, ids[-1]) == "Good"
    assert any("already your good exemplar" in t.value and "Undo" in t.value for t in at.toast)
    with session() as s:
        last = s.scalars(select(Feedback).order_by(Feedback.id.desc())).first()
        assert last.kind == "bad" and last.undone_at is not None
    assert at.button(key="g_retrain").disabled is True


def test_a_held_out_card_shows_its_split_and_refuses_a_pick_with_the_reason(gallery):
    at, rid, mid, uid = gallery
    ids = card_ids(at)
    held = next(i for i in ids if i not in train_only(ids))
    row = next(r for r in query_explanations(rid, "ar", False, limit=12)[0] if r["image_id"] == held)
    texts = card_texts(at)
    assert f"{row['split']} split · " in texts  # every card says its split and the split's role
    card_action(at, held, "Good")
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"from the {row['split']} split: pick exemplars from train" in t.value.replace("\\", "")
               for t in at.toast)  # the toast is escaped Markdown (it names the file)
    assert card_shown(at, held) is None
    with session() as s:
        assert s.scalars(select(Feedback)).first() is None  # refused: nothing written


def test_a_pick_without_a_user_says_so_and_writes_nothing():
    from services.explanations import feedback as fb

    ds_id, mid = dataset_and_model(n=20, size=32)
    rid = fake_run(ds_id, mid)
    other = query_explanations(rid, splits=["train"], limit=1)[0][0]["image_id"]
    fb.pick(get_or_create_user("rivera"), mid, other, "good", rid)  # another user's pick
    at = open_page(app_test(), "gallery")
    assert card_shown(at, other) is None  # not shown as if it were the viewer's
    assert not any("rivera" in m.value for m in at.markdown)
    iid = card_ids(at)[1]
    card_action(at, iid, "Good")
    assert not at.exception, [e.value for e in at.exception]
    assert any("Pick or create a user" in t.value for t in at.toast)  # a toast: seen wherever the page is scrolled
    assert card_shown(at, iid) is None
    with session() as s:
        assert len(s.scalars(select(Feedback)).all()) == 1  # only rivera's
    card_action(at, iid, "Detail")  # looking needs no user
    assert at.button(key="g_close") is not None and card_shown(at, iid) == "Detail"


def test_suggest_then_accept(gallery):
    at, rid, mid, uid = gallery
    at.button(key="g_suggest_btn").click().run()
    at.button(key="g_accept").click().run()
    assert not at.exception
    ranked = [r for r in query_explanations(rid, "ar", True, splits=["train"], limit=None)[0] if r["ar"] is not None]
    with session() as s:
        picks = {f.kind: f.image_id for f in s.scalars(select(Feedback))}
    assert picks == {"good": ranked[0]["image_id"], "bad": ranked[-1]["image_id"]}


def test_annotation_and_detail_view(gallery):
    at, rid, mid, uid = gallery
    iid = card_ids(at)[0]
    key = f"g_ann_{iid}"
    card_action(at, iid, "Detail")  # annotation lives in the detail view (no form per card)
    assert f"{key}_q" not in [r.key for r in at.radio]  # in a panel drawn only while open
    at.session_state["g_det_annotate"] = True
    at.run()
    at.radio(key=f"{key}_q").set_value("bad")
    at.select_slider(key=f"{key}_r").set_value(2)
    at.text_area(key=f"{key}_c").input("<b>marker</b> not lungs")
    at.button(key=f"FormSubmitter:{key}-Save annotation").click().run()
    assert not at.exception
    with session() as s:
        a = s.scalars(select(Annotation)).one()
        assert (a.user_id, a.image_id, a.model_id, a.run_id, a.quality, a.rating, a.comment) == (
            uid, iid, mid, rid, "bad", 2, "<b>marker</b> not lungs")
    # the saved rating stays visible on its form, and on the card
    assert at.radio(key=f"{key}_q").value == "bad" and at.select_slider(key=f"{key}_r").value == 2
    captions = " ".join(c.value for c in at.caption)
    texts = card_texts(at)  # the card's lines are plain text
    assert "quality bad · rating 2/5" in captions and "annotated by tester: bad · 2/5" in texts
    at.button(key="g_close").click().run()
    open_filters(at).selectbox(key="g_annot").set_value("yes").run()
    assert card_ids(at) == [iid]
    at.selectbox(key="g_annot").set_value("all").run()
    card_action(at, iid, "Detail")
    assert not at.exception
    assert at.button(key="g_det_good") is not None
    at.button(key="g_det_good").click().run()
    with session() as s:
        f = s.scalars(select(Feedback)).one()
        assert (f.kind, f.image_id, f.user_id) == ("good", iid, uid)
    at.button(key="g_det_next").click().run()
    assert not at.exception
    at.button(key="g_det_compare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    figures = " ".join(h.value for h in at.html if "lung mask" in h.value)  # the detail's images: one st.html
    assert ">original<" in figures and ">lung mask (M)<" in figures and "no lung mask for this image" not in figures
    for _ in range(240):  # the comparison runs in a background thread; the page shows it once it is there
        if any("Not shown: " in c.value and "LTX (finetuned)" in c.value for c in at.caption):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    # done: a method that cannot run says why (this model has no LTX explainer) in one full-width line (no tall
    # warning box per method); the others are images; no button
    assert any("LTX explainer: train one" in c.value.replace("\\", "") for c in at.caption)
    assert not any("LTX" in w.value for w in at.warning)
    assert "g_det_compare" not in [b.key for b in at.button]


def test_pages_say_what_to_do_without_runs():
    ds_id, mid = dataset_and_model(n=20, size=32)
    at = open_page(app_test(), "gallery")
    assert not at.exception
    assert any("exemplar explain --model" in i.value for i in at.info)
    at = open_page(app_test(), "annotations")
    assert not at.exception


def test_annotations_page_lists_annotations_and_picks_as_text():
    from services.explanations import feedback as fb

    ds_id, mid = dataset_and_model(n=20, size=32)
    rid = fake_run(ds_id, mid)
    uid = get_or_create_user("tester")
    iid = query_explanations(rid, splits=["train"], limit=1)[0][0]["image_id"]
    fb.annotate(uid, iid, "good", 5, "<img src=x onerror=alert(1)>", run_id=rid)
    fb.pick(uid, mid, iid, "good", rid)
    fb.undo(uid, mid)
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "annotations")
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe) == 2
    df = at.dataframe[0].value
    assert list(df["comment"]) == ["<img src=x onerror=alert(1)>"]
    assert at.dataframe[1].value["undone_at"].notna().all()
    assert not any("onerror" in m.value for m in at.markdown)


def test_clicks_are_applied_once_in_order_and_a_late_log_is_ignored():
    """The card grid's state is a log of numbered clicks (pages/parts/card_grid.py): only clicks numbered above the
    last applied one count, in order; a log the browser sends again, or a malformed entry, applies nothing."""
    from pages.parts.card_grid import new_clicks

    log = {"clicks": [{"seq": 3, "image_id": 9, "action": "Bad", "shown": None},
                      {"seq": 2, "image_id": 7, "action": "Good", "shown": None},
                      {"seq": 1, "image_id": 5, "action": "Detail", "shown": None}]}
    assert [c["seq"] for c in new_clicks(log, 1)] == [2, 3]  # in the order they were made
    assert new_clicks(log, 3) == []  # all applied: a replay of the log is no click
    bad = {"clicks": [{"seq": 4, "image_id": "9", "action": "Good", "shown": None},
                      {"seq": 5, "image_id": 9, "action": "Delete", "shown": None},
                      {"seq": True, "image_id": 9, "action": "Good", "shown": None}, "x"]}
    assert new_clicks(bad, 0) == [] and new_clicks(None, 0) == [] and new_clicks({"clicks": 3}, 0) == []


def test_two_picks_in_one_run_are_both_stored_and_a_replayed_log_changes_nothing(gallery):
    at, rid, mid, uid = gallery
    ids = train_only(card_ids(at))
    log = [{"seq": 1, "image_id": ids[0], "action": "Good", "shown": None},
           {"seq": 2, "image_id": ids[1], "action": "Bad", "shown": None}]
    send_clicks(at, log)  # both clicks reach the server in one run
    assert not at.exception, [e.value for e in at.exception]
    assert card_shown(at, ids[0]) == "Good" and card_shown(at, ids[1]) == "Bad"
    send_clicks(at, log[::-1])  # a late browser sends the same log again
    with session() as s:
        assert [(f.kind, f.image_id, f.undone_at) for f in s.scalars(select(Feedback).order_by(Feedback.id))] == [
            ("good", ids[0], None), ("bad", ids[1], None)]
    assert card_shown(at, ids[0]) == "Good" and card_shown(at, ids[1]) == "Bad"


def test_the_line_above_the_cards_shows_a_class_name_as_plain_text():
    from db.models import Dataset

    ds_id, mid = dataset_and_model(n=20, size=32)
    fake_run(ds_id, mid)
    evil = "[x](http://127.0.0.1:9/t) **b**"
    with session() as s:
        d = s.get(Dataset, ds_id)
        d.classes = [d.classes[0], evil, *d.classes[2:]]
    at = open_filters(open_page(app_test(), "gallery"))
    at.multiselect(key="g_true").set_value([1]).run()
    assert not at.exception, [e.value for e in at.exception]
    line = next(c.value for c in at.caption if "match" in c.value and "page 1 of" in c.value)
    assert "filtered by true class" in line and "\\[x\\]\\(http" in line and "\\*\\*b\\*\\*" in line  # escaped
