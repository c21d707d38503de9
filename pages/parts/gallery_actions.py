"""The gallery's callbacks (pick, undo, suggest, detail, annotate) and small formatting helpers shared by its parts."""
from __future__ import annotations

import math

import streamlit as st

from pages.parts.plain import md_escape

from core.registries import EXPLANATION_METHODS, METRICS
from pages.common import current_user
from services.explanations import feedback as fb

SORT_LABELS = {**METRICS.labels(kind="localisation"), "prob": "probability"}  # explaining.SORTABLE
METHOD_LABELS = EXPLANATION_METHODS.labels()
CARD_METRICS = METRICS.names(groups="evaluation", kind="localisation")  # AR and AP: on every card and pick
NA_HELP = ("n/a: the metric is undefined for this image (no lung mask, or a map that is zero everywhere), "
           "never silently 0 or 1")


def fmt(v, nd: int = 2) -> str:
    """A number for the screen; None / NaN read "n/a" (see NA_HELP)."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def cls_name(classes: list[str], i) -> str:
    return classes[i] if i is not None and 0 <= int(i) < len(classes) else "n/a"


def flash(kind: str, text: str) -> None:
    st.session_state.setdefault("g_flash", []).append((kind, text))


FLASH_ICONS = {"success": "✅", "info": "ℹ️", "warning": "⚠️"}


def show_flash() -> None:
    """The outcome of the last click as a toast: it shows in the corner wherever the page is scrolled (a message at
    the top of the gallery went unseen after a click on a card further down)."""
    for kind, text in st.session_state.pop("g_flash", []):
        st.toast(text, icon=FLASH_ICONS.get(kind))


def do_pick(model_id: int, run_id: int, image_id: int, kind: str) -> None:
    u = current_user()
    if u is None:
        flash("warning", "Pick or create a user in the sidebar first: every pick records who made it.")
        return
    try:
        p = fb.pick(u["id"], model_id, image_id, kind, run_id)
    except ValueError as exc:  # e.g. a held-out image: refused here, with the split and the reason
        flash("warning", md_escape(str(exc)))  # names the image file: plain text
        return
    flash("success", f"{md_escape(p['path'])} is now your {kind} exemplar.")


def do_undo(model_id: int) -> None:
    u = current_user()
    if u is None:
        flash("warning", "Pick a user in the sidebar first.")
        return
    p = fb.undo(u["id"], model_id)
    flash("info", f"Undid the {p['kind']} pick of {md_escape(p['path'])}." if p else "Nothing to undo.")


def do_suggest(run_id: int) -> None:
    st.session_state["g_suggest"] = {"run_id": run_id, **fb.suggest_pair(run_id)}


def do_accept_suggestion(model_id: int, run_id: int) -> None:
    sug = st.session_state.pop("g_suggest", None) or {}
    for kind in ("good", "bad"):
        if sug.get(kind):
            do_pick(model_id, run_id, sug[kind]["image_id"], kind)


def do_detail(image_id: int | None) -> None:
    st.session_state["g_detail"] = image_id


def card_choice(image_id: int, good_id, bad_id, detail_id) -> str | None:
    """What a card's buttons show selected: its pick (Good / Bad), else Detail while its detail view is open."""
    if image_id == good_id:
        return "Good"
    if image_id == bad_id:
        return "Bad"
    return "Detail" if image_id == detail_id else None


def do_card(model_id: int, run_id: int, image_id: int, choice: str, shown: str | None) -> None:
    """A card's button was clicked (pages/parts/card_grid.py gives each click once, in order): Good / Bad pick the
    image, Detail opens its detail view. Clicking the option already selected (`shown`: what the card showed when
    it was clicked) changes nothing and says how to take a pick back."""
    if choice == shown:
        if shown in ("Good", "Bad"):
            flash("info", f"This image is already your {shown.lower()} exemplar: **Undo last pick** (key U) takes a "
                          "pick back.")
        return
    if choice == "Detail":
        do_detail(image_id)
    else:
        do_pick(model_id, run_id, image_id, choice.lower())


def do_annotate(model_id: int, run_id: int, image_id: int, key: str) -> None:
    u = current_user()
    if u is None:
        flash("warning", "Pick or create a user in the sidebar first: every annotation records who made it.")
        return
    q = st.session_state.get(f"{key}_q")
    r = st.session_state.get(f"{key}_r")
    c = st.session_state.get(f"{key}_c") or ""
    try:
        a = fb.annotate(u["id"], image_id, quality=q, rating=int(r) if r else None, comment=c, model_id=model_id,
                        run_id=run_id)
        st.session_state[f"{key}_saved"] = a
        flash("success", "Annotation saved.")
    except ValueError as exc:
        flash("warning", str(exc))


def saved_annotation(model_id: int, image_id: int, key: str) -> dict | None:
    """The viewer's latest annotation of this image (the one saved in this session first); None without a user."""
    u = current_user()
    mine = None
    if u is not None:
        mine = next(iter(fb.list_annotations(model_id=model_id, user_id=u["id"], image_ids=[image_id], limit=1)), None)
    return st.session_state.get(f"{key}_saved") or mine


def saved_caption(saved: dict) -> None:
    """When and by whom the annotation was saved, its quality and rating: plain text (it names a user)."""
    line = (f"Saved {str(saved['created_at'] or '')[:16].replace('T', ' ')} by {saved['user']}: "
            f"quality {saved['quality'] or 'n/a'} · rating {saved['rating'] or 'n/a'}/5")
    st.caption(md_escape(line))


def annotation_form(model_id: int, run_id: int, image_id: int, key: str, saved: dict | None) -> None:
    """Quality, rating and comment; the saved values (saved_annotation) stay on the form."""
    with st.form(key=key, border=False):
        qi = fb.QUALITIES.index(saved["quality"]) if saved and saved["quality"] in fb.QUALITIES else None
        st.radio("Explanation quality", fb.QUALITIES, index=qi, horizontal=True, key=f"{key}_q")
        st.select_slider("Rating", options=[1, 2, 3, 4, 5], value=(saved and saved["rating"]) or 3, key=f"{key}_r")
        st.text_area("Comment (plain text)", value=(saved and saved["comment"]) or "", key=f"{key}_c",
                     max_chars=fb.MAX_COMMENT, height=80)
        st.form_submit_button("Save annotation", on_click=do_annotate, args=(model_id, run_id, image_id, key))
