"""Query-parameter persistence: the user, dataset, model and the gallery's settings live in the URL
(st.query_params), so a reload or a shared link opens the same view. Session state stays the working copy: a
session's first run reads the URL into it, every run writes it back (only values that differ from the defaults).
"""
from __future__ import annotations

import streamlit as st

# URL name → (session key, default); a default's type says how the value is decoded. The defaults are the gallery's
# (12 cards a page: four rows of three at 1280 px, every click well under 0.5 s; 24 / 48 / 96 a click away).
GALLERY_PARAMS: dict[str, tuple[str, object]] = {
    "run": ("g_run", 0), "sort": ("g_sort", "ar"), "order": ("g_order", "ascending"), "true": ("g_true", []),
    "pred": ("g_pred", []), "correct": ("g_correct", "all"), "split": ("g_split", []), "annot": ("g_annot", "all"),
    "opacity": ("g_opacity", 0.45), "cmap": ("g_cmap", "jet"), "per_page": ("g_per_page", 12), "page": ("g_page", 1),
    "detail": ("g_detail", 0),
}
IDENTITY = ("user", "dataset", "model")


def encode(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def decode(text: str | None, default):
    """URL text → a value of the default's type; None when it does not parse (a hand-edited URL is ignored)."""
    if text is None:
        return None
    try:
        if isinstance(default, list):
            parts = [p for p in text.split(",") if p != ""]
            return [int(p) if p.lstrip("-").isdigit() else p for p in parts]
        if isinstance(default, bool):
            return text in ("1", "true", "True")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        return None
    return text


def url_value(name: str):
    """One gallery setting from the URL, decoded (None when absent or unreadable)."""
    key, default = GALLERY_PARAMS[name]
    return decode(st.query_params.get(name), default)


def set_params(values: dict[str, object], defaults: dict[str, object] | None = None) -> None:
    """Write values to the URL; None (or a value equal to its default) removes the parameter. Only changed
    parameters are touched, so an unchanged run sends nothing to the browser."""
    defaults = defaults or {}
    for name, v in values.items():
        if v is None or v == "" or v == [] or (name in defaults and v == defaults[name]):
            if name in st.query_params:
                del st.query_params[name]
            continue
        text = encode(v)
        if st.query_params.get(name) != text:
            st.query_params[name] = text


# ----------------------------------------------------------------------------------------------- identity

def restore_identity(users: list[dict]) -> None:
    """A session's first run: user (by name), dataset (by name) and model (by id) from the URL into session state,
    where the sidebar's pickers look for the current choice."""
    if st.session_state.get("_qp_identity"):
        return
    st.session_state["_qp_identity"] = True
    name = st.query_params.get("user")
    if name and st.session_state.get("user") is None:
        u = next((u for u in users if u["name"] == name), None)
        if u is not None:
            st.session_state["user"] = {"id": u["id"], "name": u["name"]}
    ds = st.query_params.get("dataset")
    if ds and st.session_state.get("dataset") is None:
        st.session_state["dataset"] = {"name": ds}
    mid = decode(st.query_params.get("model"), 0)
    if mid and st.session_state.get("model") is None:
        st.session_state["model"] = {"id": mid}


def save_identity() -> None:
    """The current user / dataset / model into the URL."""
    u, d, m = (st.session_state.get(k) for k in IDENTITY)
    set_params({"user": u and u.get("name"), "dataset": d and d.get("name"), "model": m and m.get("id")})


# ----------------------------------------------------------------------------------------------- gallery

def gallery_defaults() -> dict[str, object]:
    return {name: default for name, (_, default) in GALLERY_PARAMS.items()}


def save_gallery(state) -> None:
    """The gallery's settings (session keys of GALLERY_PARAMS) into the URL."""
    vals = {}
    for name, (key, default) in GALLERY_PARAMS.items():
        v = state.get(key)
        vals[name] = list(v) if isinstance(v, (list, tuple)) else v
    set_params(vals, gallery_defaults())
