"""The before / after report for a parent / child model pair, on held-out splits only: parent | control | child
per split (accuracy, AR, AP, WR with 95 % intervals), the effect of the feedback (child − control) and the
verdict sentence; AR, AP and wrong-reason distributions, confusion matrices, the images whose AR changed most
(both maps side by side), and the whole report as one self-contained HTML file.

Each panel is one function taking the compare() data; main() calls them in order (add a panel: one function,
one line in PANELS)."""
from __future__ import annotations

import streamlit as st

from core.data.roles import heading

from pages.parts.plain import md_escape

from pages.common import refuse_open_bind, selected_dataset
from services.presentation import report_view as view
from services.retraining import report as rp
from services.models.catalog import list_models
from pages.parts.probe_panel import probe_or_reason, render_probe_panel
from pages.parts.viewer import report_pair_viewer

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)


def _fmt(v, nd: int = 3) -> str:
    return "NaN" if v is None or v != v else f"{v:.{nd}f}"


@st.cache_data(max_entries=16, show_spinner="Measuring parent, control and child on the held-out splits…")
def _evidence(parent: int, child: int) -> dict:
    """The held-out evidence of a pair (models never change once registered, so it is cached by their ids)."""
    return rp.evidence_report(parent, child)


@st.cache_data(max_entries=16, show_spinner=False)
def _group(retrain_id: int) -> dict:
    return rp.retrain_report(retrain_id)


def _scoped(child: dict, parent_id: int) -> dict:
    """The evidence to show: this child alone, or (radio) its retrain's seeds as a group when it has one."""
    rid = (child.get("config") or {}).get("retrain_id")
    if rid is None or child.get("parent_id") != parent_id:
        return _evidence(parent_id, child["id"])
    scope = st.radio("Figures of", ["this child alone", f"retrain #{rid}: every seed"], horizontal=True,
                     key="rp_scope", help="A retrain runs K seeds; each seed's child, plain control and random-pair "
                                          "control are models you can open. 'Every seed' shows their means with "
                                          "intervals over seeds and images.")
    return _group(int(rid)) if scope.startswith("retrain") else _evidence(parent_id, child["id"])


def _figs(data: dict) -> dict:
    if "_figs" not in data:
        data["_figs"] = view.figures(data)
    return data["_figs"]


@st.cache_data(max_entries=8, show_spinner=False)
def _html(parent: int, child: int, runs: tuple) -> bytes:
    return rp.report_html(parent, child, probe=probe_or_reason(parent, child)).encode("utf-8")


def _label(m: dict) -> str:
    return f"#{m['id']} {m['name']}"


def evidence_panel(data: dict) -> None:
    """Verdict, then parent | control | child per held-out split with intervals, and the effect."""
    ev = data["evidence"]
    st.subheader("Verdict")
    st.text(ev["verdict"])  # plain text: never rendered as Markdown
    ctl = f"plain control #{ev['control']}" if ev.get("control") else "no control (effect vs the parent)"
    rnd = f"random-pair control #{ev['random_control']}" if ev.get("random_control") else "no random-pair control"
    st.caption(f"{md_escape(ev.get('describes') or '')} · held-out splits only · {ctl} · {rnd} · effect = child − "
               f"{md_escape(ev['effect_vs'])} · {ev['seeds']} seed(s) · 95 % intervals: {md_escape(ev['interval'])} · "
               f"{md_escape(ev['source'])} · "
               "the verdict reads test and test_shifted only (val selected the settings: not evidence)")
    cols = ("measure", *view.WHO_NAMES.values(), *view.EFFECTS.values())
    for s_, tab in zip(ev["splits"], st.tabs([heading(s) for s in ev["splits"]])):
        tab.dataframe([r for r in view.effect_rows(ev) if r["split"] == s_], hide_index=True,
                      column_order=cols, key=f"rp_ev_{s_}")
    figs = _figs(data)
    if "accuracy" in figs:
        st.plotly_chart(figs["accuracy"], key="rp_accuracy", width="stretch")


def method_panel(data: dict) -> None:
    x = data.get("xbl") or {}
    if x:
        pair = x.get("pair") or {}
        g, b = pair.get("good") or {}, pair.get("bad") or {}
        st.caption(f"Method `{x.get('method')}` · settings `{x.get('settings')}` · good {md_escape(g.get('path'))} "
                   f"({g.get('split')}) · bad {md_escape(b.get('path'))} ({b.get('split')})")


def maps_panel(data: dict) -> None:
    """Per-image AR / AP / WR histograms (held-out images), confusion matrices, per-epoch diagnostics."""
    if data["per_image"] is None:
        st.warning("One of the two models has no GradCAM run yet: run **Explain** for it to compare maps.")
    figs = _figs(data)
    cols = st.columns(3)
    for col, k in zip(cols, ("hist_ar", "hist_ap", "hist_wr")):
        if k in figs:
            col.plotly_chart(figs[k], key=f"rp_{k}", width="stretch")
    conf = [k for k in figs if k.startswith("confusion_")]
    if conf:
        tabs = st.tabs([k.removeprefix("confusion_") for k in conf])
        for tab, k in zip(tabs, conf):
            tab.plotly_chart(figs[k], key=f"rp_{k}", width="stretch")
    if "history" in figs:
        st.markdown("**Fine-tune diagnostics per epoch (train and val)**")
        st.plotly_chart(figs["history"], key="rp_history", width="stretch")


def changed_panel(data: dict) -> None:
    if not data["changed"]:
        return
    st.subheader("Held-out images whose AR changed most (before | after)")
    imgs = rp.changed_images(data, side=160)
    classes = data["classes"]
    grid = st.columns(4)
    for j, r in enumerate(imgs):
        with grid[j % 4]:
            st.image([r["png_parent"], r["png_child"]], width=120)
            lab = classes[r["label"]] if 0 <= r["label"] < len(classes) else r["label"]
            st.caption(f"{md_escape(r['path'])} · {lab} · {r['split']}  \nAR {_fmt(r['ar_parent'], 2)} → "
                       f"{_fmt(r['ar_child'], 2)} · AP {_fmt(r['ap_parent'], 2)} → {_fmt(r['ap_child'], 2)}")
    if st.toggle("Open a pair in the viewer (native resolution, synced zoom)", key="rp_viewer"):  # issue 17
        report_pair_viewer(data, key="rp_view")


PANELS = [method_panel, evidence_panel, maps_panel, changed_panel]


def main() -> None:
    st.title("Before / after report")
    ds = selected_dataset()
    if ds is None:
        st.info("Pick a dataset in the sidebar.")
        return
    models = list_models("classifier", ds["id"])
    by_id = {m["id"]: m for m in models}
    children = [m for m in models if m.get("parent_id") in by_id and not (m.get("config") or {}).get("control_of")]
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
        data = rp.compare(parent_id, child_id, evidence=_scoped(by_id[child_id], parent_id))
    except ValueError as exc:
        st.error(str(exc))
        return
    if not data["related"]:
        st.caption("The model chosen as 'before' is not the child's parent: the comparison still holds image by "
                   "image.")
    for panel in PANELS:
        panel(data)
    runs = tuple(sorted(data["runs"].items()))
    st.download_button("Download the report (HTML)", data=lambda: _html(parent_id, child_id, runs),
                       file_name=f"exemplar_report_{parent_id}_{child_id}.html", mime="text/html",
                       key="rp_download")
    render_probe_panel(parent_id, child_id)


main()
