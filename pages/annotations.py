"""The annotation browser: every rating (explanation quality from the gallery, counterfactual realism and
plausibility) and the exemplar picks (with undone ones), filterable by kind, user, model and method, downloadable
as CSV. Comments are shown as plain text, never as HTML; empty cells read "n/a"."""
from __future__ import annotations

import csv
import io

import streamlit as st

from services.presentation.palette import METHOD_LABELS
from pages.common import refuse_open_bind, current_user, selected_model
from pages.parts.gallery_actions import CARD_METRICS
from services.explanations import feedback as fb
from services.models.catalog import list_models
from services.explanations.ratings import COLUMNS, list_ratings, rating_methods
from services.team.users import list_users

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

KIND_LABELS = {"all": "all ratings", "explanation": "explanation quality", "counterfactual": "counterfactual ratings"}


def to_csv(rows: list[dict], cols: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue().encode()


def shown(rows: list[dict], cols: list[str]) -> list[dict]:
    """Rows for the screen: missing values read "n/a" (the CSV keeps them empty)."""
    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    return [{c: cell(r.get(c)) for c in cols} for r in rows]


def filters():
    model = selected_model()
    users = list_users()
    me = current_user()
    c = st.columns(4)
    kind = c[0].selectbox("Kind", list(KIND_LABELS), format_func=KIND_LABELS.get, key="an_kind")
    names = ["everyone"] + [u["name"] for u in users]
    who = c[1].selectbox("User", names, index=names.index(me["name"]) if me and me["name"] in names else 0,
                         key="an_user")
    models = {m["id"]: f"#{m['id']} {m['name']}" for m in list_models("classifier")}
    opts = [0, *models]
    mid = c[2].selectbox("Model", opts, index=opts.index(model["id"]) if model and model["id"] in opts else 0,
                         format_func=lambda i: "all models" if i == 0 else models[i], key="an_model")
    methods = ["any", *rating_methods()]
    method = c[3].selectbox("Method", methods, format_func=lambda m: METHOD_LABELS.get(m, m), key="an_method")
    uid = next((u["id"] for u in users if u["name"] == who), None)
    return (None if kind == "all" else kind), uid, (mid or None), (None if method == "any" else method)


def main() -> None:
    st.title("Annotations")
    kind, uid, mid, method = filters()
    rows = list_ratings(kind=kind, user_id=uid, model_id=mid, method=method)
    st.subheader("Ratings")
    if not rows:
        st.info("No ratings match. Annotate explanations in the **Gallery** (**Detail** on a card) and rate "
                "counterfactuals on **Counterfactuals**.")
    else:
        n_exp = sum(r["kind"] == "explanation" for r in rows)
        st.caption(f"{len(rows)} rating(s): {n_exp} explanation-quality, {len(rows) - n_exp} counterfactual · "
                   "n/a = not given by the reader")
        # st.dataframe renders every cell as plain text: a comment holding HTML is shown, never interpreted.
        st.dataframe(shown(rows, COLUMNS), hide_index=True, key="an_table")
        st.download_button("Download ratings (CSV)", to_csv(rows, COLUMNS), "ratings.csv", "text/csv", key="an_csv")

    st.subheader("Exemplar picks")
    picks = fb.history(mid, uid, limit=5000)
    if not picks:
        st.info("No good / bad exemplar picks yet: pick them on the **Gallery** page.")
    else:
        pcols = ["created_at", "user", "kind", "model_id", "run_id", "image_id", "path", *CARD_METRICS, "undone_at"]
        live = sum(p["undone_at"] is None for p in picks)
        st.caption(f"{len(picks)} pick(s), {live} live, {len(picks) - live} undone (kept as history)")
        st.dataframe(shown(picks, pcols), hide_index=True, key="an_picks")
        st.download_button("Download picks (CSV)", to_csv(picks, pcols), "picks.csv", "text/csv", key="an_picks_csv")


main()
