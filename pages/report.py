"""The before / after report for a parent / child model pair: AR, AP and wrong-reason distributions, accuracy on
val / test / test_shifted, confusion matrices, the images whose AR changed most (both maps side by side), and
the whole report as one self-contained HTML file."""
from __future__ import annotations

import streamlit as st

from pages.common import selected_dataset
from services import report as rp
from services.catalog import list_models


def _fmt(v, nd: int = 3) -> str:
    return "NaN" if v is None or v != v else f"{v:.{nd}f}"


@st.cache_data(max_entries=8, show_spinner=False)
def _html(parent: int, child: int, runs: tuple) -> bytes:
    return rp.report_html(parent, child).encode("utf-8")


def _label(m: dict) -> str:
    return f"#{m['id']} {m['name']}"


def main() -> None:
    st.title("Before / after report")
    ds = selected_dataset()
    if ds is None:
        st.info("Pick a dataset in the sidebar.")
        return
    models = list_models("classifier", ds["id"])
    by_id = {m["id"]: m for m in models}
    children = [m for m in models if m.get("parent_id") in by_id]
    if not children:
        st.info("No retrained model for this dataset yet: start one on **Retrain**.")
        return
    want = st.session_state.get("report_pair") or {}
    ids = [m["id"] for m in children]
    ci = ids.index(want["child"]) if want.get("child") in ids else len(ids) - 1
    c = st.columns(2)
    child_id = c[0].selectbox("After (child)", ids, index=ci, key="rp_child", format_func=lambda i: _label(by_id[i]))
    others = [m["id"] for m in models if m["id"] != child_id]
    default_parent = by_id[child_id]["parent_id"]
    pi = others.index(default_parent) if default_parent in others else 0
    parent_id = c[1].selectbox("Before (parent)", others, index=pi, key="rp_parent",
                               format_func=lambda i: _label(by_id[i]))
    try:
        data = rp.compare(parent_id, child_id)
    except ValueError as exc:
        st.error(str(exc))
        return
    if not data["related"]:
        st.caption("The model chosen as 'before' is not the child's parent: the comparison still holds image by "
                   "image.")
    x = data.get("xbl") or {}
    if x:
        pair = x.get("pair") or {}
        st.markdown(f"Method **{x.get('method')}** · settings `{x.get('settings')}` · good "
                    f"`{(pair.get('good') or {}).get('path')}` · bad `{(pair.get('bad') or {}).get('path')}`")

    rows = []
    for s, a in data["accuracy"].items():
        d = a["child"] - a["parent"] if a["child"] is not None and a["parent"] is not None else None
        rows.append({"measure": f"accuracy · {s}", "before": a["parent"], "after": a["child"], "change": d})
    if data["summary"]:
        sp, sc = data["summary"]["parent"], data["summary"]["child"]
        for k, name in (("ar_mean", "mean AR"), ("ap_mean", "mean AP"), ("wr_mean", "mean wrong reason (WR)")):
            d = sc[k] - sp[k] if sc[k] is not None and sp[k] is not None else None
            rows.append({"measure": name, "before": sp[k], "after": sc[k], "change": d})
    st.dataframe(rows, hide_index=True, key="rp_table")
    if data["per_image"] is None:
        st.warning("One of the two models has no GradCAM run yet: run **Explain** for it to compare maps.")
    figs = rp.figures(data)
    cols = st.columns(3)
    for col, k in zip(cols, ("hist_ar", "hist_ap", "hist_wr")):
        if k in figs:
            col.plotly_chart(figs[k], key=f"rp_{k}", width="stretch")
    if "accuracy" in figs:
        st.plotly_chart(figs["accuracy"], key="rp_accuracy", width="stretch")
    conf = [k for k in figs if k.startswith("confusion_")]
    if conf:
        tabs = st.tabs([k.removeprefix("confusion_") for k in conf])
        for tab, k in zip(tabs, conf):
            tab.plotly_chart(figs[k], key=f"rp_{k}", width="stretch")
    if "history" in figs:
        st.markdown("**Fine-tune diagnostics per epoch**")
        st.plotly_chart(figs["history"], key="rp_history", width="stretch")
    if data["changed"]:
        st.subheader("Images whose AR changed most (before | after)")
        imgs = rp.changed_images(data, side=160)
        classes = data["classes"]
        grid = st.columns(4)
        for j, r in enumerate(imgs):
            with grid[j % 4]:
                st.image([r["png_parent"], r["png_child"]], width=120)
                lab = classes[r["label"]] if 0 <= r["label"] < len(classes) else r["label"]
                st.caption(f"`{r['path']}` · {lab}  \nAR {_fmt(r['ar_parent'], 2)} → {_fmt(r['ar_child'], 2)} · "
                           f"AP {_fmt(r['ap_parent'], 2)} → {_fmt(r['ap_child'], 2)}")
        if st.toggle("Open a pair in the viewer (native resolution, synced zoom)", key="rp_viewer"):  # issue 17
            from pages.parts.viewer import report_pair_viewer
            report_pair_viewer(data, key="rp_view")
    runs = tuple(sorted(data["runs"].items()))
    st.download_button("Download the report (HTML)", data=lambda: _html(parent_id, child_id, runs),
                       file_name=f"exemplar_report_{parent_id}_{child_id}.html", mime="text/html",
                       key="rp_download")


main()
