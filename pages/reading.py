"""Reading: a reader's blinded worklist. One question at a time, answered with the keyboard (1–9, S skip,
← back, → next), resumed where the reader left off. No model, method, metric or other reader is ever shown."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pages.common import refuse_open_bind, require_user
from pages.parts.plain import md_escape
from pages.parts.overlays import blend, gray_rgb, png
from services.reading import studies

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

st.title("Reading")
me = require_user()


def _units(wl: list[dict], qs: list[dict]) -> list[tuple[int, str, dict]]:
    """(worklist row, side, question) in the order the reader answers them."""
    return [(i, sd, q) for i, it in enumerate(wl) for sd in it["sides"] for q in qs]


def _first_open(units, wl) -> int:
    for n, (i, sd, q) in enumerate(units):
        if f"{q['id']}:{sd}" not in wl[i]["answers"]:
            return n
    return max(0, len(units) - 1)


def _answer(sid: int, item_id: int, qid: int, side: str, value, pos_key: str, n_units: int) -> None:
    try:
        studies.answer(me["id"], sid, item_id, value, question_id=qid, side=side)
    except (ValueError, PermissionError) as exc:
        st.session_state["rd_error"] = str(exc)
        return
    st.session_state[pos_key] = min(st.session_state.get(pos_key, 0) + 1, n_units - 1)


def _move(pos_key: str, step: int, n_units: int) -> None:
    st.session_state[pos_key] = max(0, min(st.session_state.get(pos_key, 0) + step, n_units - 1))


def _pictures(sid: int, item: dict, side: str) -> None:
    pics = studies.item_pictures(me["id"], sid, item["item_id"])
    img = np.asarray(pics["image"], np.uint8)
    if "map" in pics:
        c1, c2 = st.columns(2)
        c1.image(png(gray_rgb(img), 320), caption="image")
        c2.image(png(blend(img[None], pics["map"][None])[0], 320), caption="explanation map")
        return
    cols = st.columns(3)
    cols[0].image(png(gray_rgb(img), 260), caption="original")
    for col, pos, sd in zip(cols[1:], ("left", "right"), item["sides"]):
        arr = np.asarray(pics[pos])
        arr = (arr * 255).clip(0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
        col.image(png(gray_rgb(arr.reshape(arr.shape[-2:])), 260),
                  caption=f"{pos} ← answering" if sd == side else pos)


def _worklist(sid: int) -> None:
    wl = studies.worklist(me["id"], sid)
    qs = studies.questions(sid)
    units = _units(wl, qs)
    if not units:
        st.info("This study has no items.")
        return
    pos_key = f"rd_pos_{sid}"
    if pos_key not in st.session_state:
        st.session_state[pos_key] = _first_open(units, wl)  # resume
    pos = min(st.session_state[pos_key], len(units) - 1)
    done = sum(1 for i, sd, q in units if f"{q['id']}:{sd}" in wl[i]["answers"]
               and wl[i]["answers"][f"{q['id']}:{sd}"] is not None)
    st.progress(done / len(units), text=f"{done} of {len(units)} answered")
    i, side, q = units[pos]
    item = wl[i]
    st.text(f"Item {item['number']} of {len(wl)}" + (f" · {'left' if item['sides'][0] == side else 'right'} picture"
                                                      if side else ""))
    _pictures(sid, item, side)
    st.text(q["text"])
    key = f"{q['id']}:{side}"
    if key in item["answers"]:
        v = item["answers"][key]
        st.text(f"your answer: {'skipped' if v is None else v} (a new answer is kept as a new version)")
    args = (sid, item["item_id"], q["id"], side)
    cols = st.columns(len(q["levels"]) + 3)
    for k, level in enumerate(q["levels"]):
        cols[k].button(f"{k + 1} · {md_escape(level)}", key=f"rd_ans_{k}", on_click=_answer,
                       args=(*args, level, pos_key, len(units)), shortcut=str(k + 1) if k < 9 else None)
    cols[-3].button("Skip (S)", key="rd_skip", on_click=_answer, args=(*args, None, pos_key, len(units)), shortcut="S")
    cols[-2].button("← Back", key="rd_back", on_click=_move, args=(pos_key, -1, len(units)), shortcut="Left",
                    disabled=pos == 0)
    cols[-1].button("Next →", key="rd_next", on_click=_move, args=(pos_key, 1, len(units)), shortcut="Right",
                    disabled=pos >= len(units) - 1)
    if st.session_state.get("rd_error"):
        st.error(st.session_state.pop("rd_error"))
    if done == len(units):
        st.success("Every item is answered. You can go back and change an answer: the old one is kept.")


if me is not None:
    mine = studies.my_studies(me["id"])
    if not mine:
        st.info("No reading work is assigned to you.")
    else:
        labels = {m["study_id"]: f"Study {m['study_id']}: {m['name']} ({m['answered']}/{m['total']})" for m in mine}
        sid = st.selectbox("Study", list(labels), format_func=labels.get, key="rd_study")
        _worklist(int(sid))
