"""Reading: a reader's blinded worklist. One question at a time, answered with the keyboard (1–9, S skip,
← back, → next), resumed where the reader left off. No model, method, metric or other reader is ever shown."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pages.common import refuse_open_bind, require_user
from pages.parts.plain import md_escape
from pages.parts.overlays import blend, gray_rgb, side_by_side
from services.reading import studies

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

st.title("Reading")
me = require_user()


def _units(wl: list[dict], qs: list[dict]) -> list[tuple[int, str, dict]]:
    """(worklist row, side, question) in the order the reader answers them."""
    return [(i, sd, q) for i, it in enumerate(wl) for sd in it["sides"] for q in qs]


def _open(units, wl) -> list[int]:
    """The units with no answer yet (a skip is an answer: 'skipped')."""
    return [n for n, (i, sd, q) in enumerate(units) if f"{q['id']}:{sd}" not in wl[i]["answers"]]


def _answer(sid: int, item_id: int, qid: int, side: str, value, n: int, pos_key: str, following: int) -> None:
    """A press on the buttons drawn for unit n. Stored only while unit n is still the current one: a key pressed
    before the next item's buttons were drawn reaches the previous item's callback, and storing it there would
    overwrite that item and skip this one. It is refused with a visible line instead, and the item waits."""
    if st.session_state.get(pos_key, n) != n:
        st.session_state["rd_error"] = ("A key pressed while the next item was still loading was not stored: answer "
                                        "the item shown now.")
        return
    try:
        studies.answer(me["id"], sid, item_id, value, question_id=qid, side=side)
    except (ValueError, PermissionError) as exc:
        st.session_state["rd_error"] = str(exc)
        return
    st.session_state.pop("rd_error", None)
    st.session_state[pos_key] = following


def _go(pos_key: str, n: int) -> None:
    st.session_state[pos_key] = n


@st.cache_data(max_entries=64, show_spinner=False)
def _pictures_png(user_id: int, sid: int, item_id: int, answering: str, sides: tuple[str, ...]) -> tuple[bytes, str]:
    """The item's pictures as ONE image (image | map, or original | left | right) and its caption: the image and its
    map are never drawn as two elements that a redraw could show from different items. Cached per reader."""
    pics = studies.item_pictures(user_id, sid, item_id)
    img = np.asarray(pics["image"], np.uint8)
    if "map" in pics:
        return side_by_side([gray_rgb(img), blend(img[None], pics["map"][None])[0]], 320), \
            "image (left) · explanation map (right)"
    panels, words = [gray_rgb(img)], ["original"]
    for pos, sd in zip(("left", "right"), sides):
        arr = np.asarray(pics[pos])
        arr = (arr * 255).clip(0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
        panels.append(gray_rgb(arr.reshape(arr.shape[-2:])))
        words.append(f"{pos} ← answering" if sd == answering else pos)
    return side_by_side(panels, 260), " · ".join(words)


def _buttons(sid: int, n: int, item: dict, side: str, q: dict, pos_key: str, following: int, last: int) -> None:
    """One button per answer, Skip, Back and Next. Their keys stay the same from item to item (one keyboard
    shortcut each; per-item keys left the previous item's shortcut listening too); the unit n travels in args."""
    args = (sid, item["item_id"], q["id"], side)
    cols = st.columns(len(q["levels"]) + 3)
    for k, level in enumerate(q["levels"]):
        cols[k].button(f"{k + 1} · {md_escape(level)}", key=f"rd_ans_{k}", on_click=_answer,
                       args=(*args, level, n, pos_key, following), shortcut=str(k + 1) if k < 9 else None)
    cols[-3].button("Skip (S)", key="rd_skip", on_click=_answer, args=(*args, None, n, pos_key, following),
                    shortcut="S")
    cols[-2].button("← Back", key="rd_back", on_click=_go, args=(pos_key, max(0, n - 1)), shortcut="Left",
                    disabled=n == 0)
    cols[-1].button("Next →", key="rd_next", on_click=_go, args=(pos_key, min(n + 1, last)), shortcut="Right",
                    disabled=n >= last)


def _unanswered(sid: int, units, wl, still: list[int], pos_key: str) -> None:
    """Names the items still without an answer and returns to each with one click."""
    if not still:
        st.success("Every item is answered. You can go back and change an answer: the old one is kept.")
        return
    qids = list(dict.fromkeys(u[2]["id"] for u in units))  # the questions in the order they are asked
    names = [f"item {wl[i]['number']}" + (f" {'left' if wl[i]['sides'][0] == sd else 'right'}" if sd else "")
             + (f" question {qids.index(q['id']) + 1}" if len(qids) > 1 else "")
             for i, sd, q in (units[n] for n in still)]
    st.warning(f"{len(still)} not answered yet: " + ", ".join(md_escape(x) for x in names[:12])
               + (" …" if len(names) > 12 else ""))
    cols = st.columns(min(len(still), 8))
    for c, n in zip(cols, still[:8]):
        c.button(f"Go to item {wl[units[n][0]]['number']}", key=f"rd_goto_{sid}_{n}", on_click=_go, args=(pos_key, n))


@st.fragment
def _worklist(sid: int) -> None:
    """One unit at a time; a keypress reruns only this fragment (the study list above is not redrawn)."""
    wl = studies.worklist(me["id"], sid)
    qs = studies.questions(sid)
    units = _units(wl, qs)
    if not units:
        st.info("This study has no items.")
        return
    still = _open(units, wl)
    pos_key = f"rd_pos_{sid}"
    if pos_key not in st.session_state:
        st.session_state[pos_key] = still[0] if still else len(units) - 1  # resume at the first open unit
    n = min(st.session_state[pos_key], len(units) - 1)
    done = len(units) - len(still)
    skipped = sum(1 for i, sd, q in units if wl[i]["answers"].get(f"{q['id']}:{sd}", "") is None)
    st.progress(done / len(units), text=f"{done} of {len(units)} answered" + (f" ({skipped} skipped)" if skipped else ""))
    i, side, q = units[n]
    item = wl[i]
    st.text(f"Item {item['number']} of {len(wl)}" + (f" · {'left' if item['sides'][0] == side else 'right'} picture"
                                                      if side else ""))
    pic, caption = _pictures_png(me["id"], sid, item["item_id"], side, tuple(item["sides"]))
    st.image(pic, caption=caption)
    st.text(q["text"])
    key = f"{q['id']}:{side}"
    if key in item["answers"]:
        v = item["answers"][key]
        st.text(f"your answer: {'skipped' if v is None else v} (a new answer is kept as a new version)")
    later = [m for m in still if m > n] or [m for m in still if m != n]
    _buttons(sid, n, item, side, q, pos_key, later[0] if later else min(n + 1, len(units) - 1), len(units) - 1)
    if st.session_state.get("rd_error"):
        st.error(md_escape(st.session_state.pop("rd_error")))  # plain text
    _unanswered(sid, units, wl, still, pos_key)
    others = studies.my_studies(me["id"])  # drawn here, so it counts as the bar above does after every answer
    st.caption("Your studies: " + " · ".join(f"study {m['study_id']} {m['answered']}/{m['total']}" for m in others))


if me is not None:
    mine = studies.my_studies(me["id"])
    if not mine:
        st.info("No reading work is assigned to you.")
    else:
        labels = {m["study_id"]: f"Study {m['study_id']}: {m['name']}" for m in mine}  # counts: in the worklist
        sid = st.selectbox("Study", list(labels), format_func=labels.get, key="rd_study")
        _worklist(int(sid))
