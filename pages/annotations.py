"""The annotation browser: explanation-quality annotations and exemplar picks (with undone ones), filterable
and downloadable as CSV. Comments are shown as plain text, never as HTML."""
from __future__ import annotations

import csv
import io

import streamlit as st

from pages.common import current_user, selected_model
from services import feedback as fb
from services.users import list_users


def to_csv(rows: list[dict], cols: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue().encode()


def main() -> None:
    st.title("Annotations")
    model = selected_model()
    users = list_users()
    c = st.columns(3)
    scope = c[0].radio("Model", ["selected model", "all models"], horizontal=True, key="an_scope",
                       disabled=model is None, index=0 if model else 1)
    names = ["everyone"] + [u["name"] for u in users]
    me = current_user()
    who = c[1].selectbox("User", names, index=names.index(me["name"]) if me and me["name"] in names else 0,
                         key="an_user")
    quality = c[2].selectbox("Quality", ["any", *fb.QUALITIES], key="an_quality")
    mid = model["id"] if model is not None and scope == "selected model" else None
    uid = next((u["id"] for u in users if u["name"] == who), None)
    rows = fb.list_annotations(model_id=mid, user_id=uid, quality=None if quality == "any" else quality, limit=5000)

    st.subheader("Explanation quality")
    if not rows:
        st.info("No annotations yet. Annotate explanations on the **Gallery** page (the *Annotate* button on each "
                "card, or in an image's detail view).")
    else:
        cols = ["created_at", "user", "model_id", "run_id", "image_id", "path", "quality", "rating", "comment"]
        st.caption(f"{len(rows)} annotation(s)")
        # st.dataframe renders every cell as plain text: a comment holding HTML is shown, never interpreted.
        st.dataframe([{k: r[k] for k in cols} for r in rows], hide_index=True,
                     column_config={"rating": st.column_config.NumberColumn("rating", format="%d / 5")})
        st.download_button("Download annotations (CSV)", to_csv(rows, cols), "annotations.csv", "text/csv",
                           key="an_csv")

    st.subheader("Exemplar picks")
    picks = fb.history(mid, uid, limit=5000)
    if not picks:
        st.info("No good / bad exemplar picks yet: pick them on the **Gallery** page.")
    else:
        pcols = ["created_at", "user", "kind", "model_id", "run_id", "image_id", "path", "ar", "ap", "undone_at"]
        live = sum(p["undone_at"] is None for p in picks)
        st.caption(f"{len(picks)} pick(s), {live} live, {len(picks) - live} undone (kept as history)")
        st.dataframe([{k: p[k] for k in pcols} for p in picks], hide_index=True)
        st.download_button("Download picks (CSV)", to_csv(picks, pcols), "picks.csv", "text/csv", key="an_picks_csv")


main()
