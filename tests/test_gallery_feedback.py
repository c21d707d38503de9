"""Exemplar picks (undo keeps history, current pair, suggest max-AR / min-AR) and annotations."""
from __future__ import annotations

import pytest

from services.explanations import feedback as fb
from services.explanations.explaining import query_explanations
from services.team.users import get_or_create_user
from tests.helpers_explain import dataset_and_model, fake_run


@pytest.fixture
def setup():
    ds_id, mid = dataset_and_model(n=20, size=32)
    rid = fake_run(ds_id, mid)
    rows, _ = query_explanations(rid, sort="index", splits=["train"], limit=None)  # picks are of train images
    return mid, rid, [r["image_id"] for r in rows], get_or_create_user("ada"), get_or_create_user("bob")


def test_pick_undo_and_history(setup):
    mid, rid, ims, ada, bob = setup
    g1 = fb.pick(ada, mid, ims[1], "good", rid)
    assert g1["user"] == "ada" and g1["run_id"] == rid and g1["ar"] is not None and g1["created_at"]
    fb.pick(ada, mid, ims[2], "bad", rid)
    fb.pick(ada, mid, ims[3], "good", rid)
    fb.pick(bob, mid, ims[4], "good", rid)
    pair = fb.current_pair(mid, ada)
    assert (pair["good"]["image_id"], pair["bad"]["image_id"]) == (ims[3], ims[2])
    assert fb.current_pair(mid, bob)["good"]["image_id"] == ims[4] and fb.current_pair(mid, bob)["bad"] is None
    assert fb.current_pair(mid)["good"]["image_id"] == ims[4]          # anyone's newest
    undone = fb.undo(ada, mid)
    assert undone["image_id"] == ims[3] and undone["undone_at"]
    assert fb.current_pair(mid, ada)["good"]["image_id"] == ims[1]     # the pick before comes back
    hist = fb.history(mid, ada)
    assert [h["image_id"] for h in hist] == [ims[3], ims[2], ims[1]] and hist[0]["undone_at"]
    assert fb.undo(ada, mid)["kind"] == "bad"
    assert fb.undo(ada, mid)["kind"] == "good"
    assert fb.undo(ada, mid) is None
    assert len(fb.history(mid)) == 4


def test_picking_the_current_bad_as_good_moves_it(setup):
    mid, rid, ims, ada, _ = setup
    fb.pick(ada, mid, ims[5], "bad", rid)
    fb.pick(ada, mid, ims[5], "good", rid)
    pair = fb.current_pair(mid, ada)
    assert pair["good"]["image_id"] == ims[5] and pair["bad"] is None


def test_undo_of_a_flip_restores_the_pick_it_replaced(setup):
    mid, rid, ims, ada, _ = setup
    fb.pick(ada, mid, ims[1], "good", rid)
    fb.pick(ada, mid, ims[6], "good", rid)   # G on image 6
    fb.pick(ada, mid, ims[6], "bad", rid)    # then B on the same image: it is the bad one now
    pair = fb.current_pair(mid, ada)
    assert pair["bad"]["image_id"] == ims[6] and pair["good"]["image_id"] == ims[1]
    fb.undo(ada, mid)                        # U: as before B, image 6 is good again and there is no bad
    pair = fb.current_pair(mid, ada)
    assert pair["good"]["image_id"] == ims[6] and pair["bad"] is None
    from sqlalchemy import select

    from db.models import AuditRow
    from services.platform.database import session

    with session() as s:  # the audit row of the undo names the pick it brought back
        last = s.scalars(select(AuditRow).where(AuditRow.action == "pick.undo").order_by(AuditRow.id.desc())).first()
        assert last.after == {"restored_feedback_id": pair["good"]["id"], "kind": "good"}
    fb.undo(ada, mid)                        # U again: the G on image 6 goes, image 1 is good
    assert fb.current_pair(mid, ada)["good"]["image_id"] == ims[1]


def test_pick_validation(setup):
    mid, rid, ims, ada, _ = setup
    with pytest.raises(ValueError):
        fb.pick(ada, mid, ims[0], "great", rid)
    with pytest.raises(ValueError):
        fb.pick(9999, mid, ims[0], "good", rid)
    with pytest.raises(ValueError):
        fb.pick(ada, mid, 99999, "good", rid)
    with pytest.raises(ValueError):
        fb.undo(ada, mid, feedback_id=12345)


def test_suggest_pair_is_max_and_min_ar_of_the_train_split(setup):
    mid, rid, ims, ada, _ = setup
    sug = fb.suggest_pair(rid)
    rows = [r for r in query_explanations(rid, limit=None)[0] if r["ar"] is not None and r["split"] == "train"]
    assert sug["good"]["ar"] == max(r["ar"] for r in rows) and sug["good"]["split"] == "train"
    assert sug["bad"]["ar"] == min(r["ar"] for r in rows)
    allrows = [r for r in query_explanations(rid, limit=None)[0] if r["ar"] is not None]
    assert fb.suggest_pair(rid, split=None)["good"]["ar"] == max(r["ar"] for r in allrows)


def test_annotations(setup):
    mid, rid, ims, ada, bob = setup
    a = fb.annotate(ada, ims[0], "unsure", 4, "  <script>x</script>  ", run_id=rid)
    assert a["model_id"] == mid and a["comment"] == "<script>x</script>" and a["user"] == "ada"
    fb.annotate(bob, ims[1], quality="good", model_id=mid)
    assert [x["image_id"] for x in fb.list_annotations(model_id=mid)] == [ims[1], ims[0]]
    assert len(fb.list_annotations(user_id=ada)) == 1 and len(fb.list_annotations(quality="good")) == 1
    for bad in ({"quality": "meh"}, {"rating": 6}, {"rating": 0}, {}, {"comment": "x" * 5001}):
        with pytest.raises(ValueError):
            fb.annotate(ada, ims[0], **bad)
