"""The explanation gallery: GradCAM maps of a whole dataset ranked by AR (AP beside it), good / bad exemplar
picks for eXBL, explanation-quality annotations, and a detail view comparing methods.

Rows are sorted, filtered and paginated in SQL (services.explaining.query_explanations); overlays for a page
are rendered in one numpy/PIL batch and cached per run and page.
"""
from __future__ import annotations

import math

import streamlit as st

from pages.common import current_user, selected_dataset, selected_model
from pages.parts import overlays as ov
from pages.parts.plain import md_escape
from services import explaining as ex
from services import feedback as fb
from services.jobs import get_job, submit

SORT_LABELS = {"ar": "AR", "ap": "AP", "f1": "F1", "soft_ar": "soft AR", "relevance_mass": "relevance mass",
               "rra": "RRA", "pointing": "pointing game", "wr": "wrong reason (WR)", "prob": "probability"}
METHOD_LABELS = {"gradcam": "GradCAM", "integrated_gradients": "Integrated Gradients", "saliency": "Saliency",
                 "occlusion": "Occlusion", "guided_gradcam": "Guided GradCAM", "ltx": "LTX (finetuned)",
                 "ltx_pretrained": "LTX (pretrained only)"}
PER_PAGE = (12, 24, 48, 96)
VIEW_DEFAULTS = {"g_sort": "ar", "g_order": "ascending", "g_true": [], "g_pred": [], "g_correct": "all",
                 "g_split": [], "g_annot": "all", "g_opacity": 0.45, "g_cmap": None, "g_per_page": PER_PAGE[1]}
COLS = 4


def fmt(v, nd: int = 2) -> str:
    return "NaN" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def flash(kind: str, text: str) -> None:
    st.session_state.setdefault("g_flash", []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop("g_flash", []):
        getattr(st, kind)(text)


def cls_name(classes: list[str], i) -> str:
    return classes[i] if i is not None and 0 <= int(i) < len(classes) else str(i)


# ----------------------------------------------------------------------------------------------- actions

def do_pick(model_id: int, run_id: int, image_id: int, kind: str) -> None:
    u = current_user()
    if u is None:
        flash("warning", "Pick or create a user in the sidebar first: every pick records who made it.")
        return
    p = fb.pick(u["id"], model_id, image_id, kind, run_id)
    flash("success", f"{p['path']} is now your {kind} exemplar.")


def do_undo(model_id: int) -> None:
    u = current_user()
    if u is None:
        flash("warning", "Pick a user in the sidebar first.")
        return
    p = fb.undo(u["id"], model_id)
    flash("info", f"Undid the {p['kind']} pick of {p['path']}." if p else "Nothing to undo.")


def do_suggest(run_id: int) -> None:
    st.session_state["g_suggest"] = {"run_id": run_id, **fb.suggest_pair(run_id)}


def do_accept_suggestion(model_id: int, run_id: int) -> None:
    sug = st.session_state.pop("g_suggest", None) or {}
    for kind in ("good", "bad"):
        if sug.get(kind):
            do_pick(model_id, run_id, sug[kind]["image_id"], kind)


def do_detail(image_id: int | None) -> None:
    st.session_state["g_detail"] = image_id


def do_annotate(model_id: int, run_id: int, image_id: int, key: str) -> None:
    u = current_user()
    if u is None:
        flash("warning", "Pick or create a user in the sidebar first: every annotation records who made it.")
        return
    q = st.session_state.get(f"{key}_q")
    r = st.session_state.get(f"{key}_r")
    c = st.session_state.get(f"{key}_c") or ""
    try:
        fb.annotate(u["id"], image_id, quality=q, rating=int(r) if r else None, comment=c, model_id=model_id,
                    run_id=run_id)
        flash("success", "Annotation saved.")
    except ValueError as exc:
        flash("warning", str(exc))


def annotation_form(model_id: int, run_id: int, image_id: int, key: str) -> None:
    with st.form(key=key, border=False):
        st.radio("Explanation quality", fb.QUALITIES, index=None, horizontal=True, key=f"{key}_q")
        st.select_slider("Rating", options=[1, 2, 3, 4, 5], value=3, key=f"{key}_r")
        st.text_area("Comment (plain text)", key=f"{key}_c", max_chars=fb.MAX_COMMENT, height=80)
        st.form_submit_button("Save annotation", on_click=do_annotate, args=(model_id, run_id, image_id, key))


# ----------------------------------------------------------------------------------------------- explain job

def explain_panel(model: dict, dataset: dict, has_runs: bool) -> None:
    with st.expander("Compute explanations (explain job)", expanded=not has_runs):
        c1, c2, c3, c4 = st.columns([2, 3, 2, 2])
        method = c1.selectbox("Method", list(METHOD_LABELS), format_func=METHOD_LABELS.get, key="g_job_method")
        splits = c2.multiselect("Splits (none = all)", ["train", "val", "test", "test_shifted"], key="g_job_splits")
        target = c3.radio("Explain the", ["predicted", "true"], horizontal=True, key="g_job_target",
                          format_func=lambda t: f"{t} class")
        tau = c4.slider("τ (threshold of T(E))", 0.05, 1.0, 0.5, 0.05, key="g_job_tau")
        if st.button("Start explain job", key="g_start", type="primary"):
            u = current_user()
            if u is None:
                st.warning("Pick or create a user in the sidebar first: every job records who started it.")
            else:
                jid = submit("explain", {"model_id": model["id"], "method": method, "splits": splits,
                                         "target": target, "tau": tau}, u["id"])
                st.session_state["g_job"] = jid
                st.session_state["g_job_seen"] = False
    jid = st.session_state.get("g_job")
    if jid:
        _job_fragment(jid)


@st.fragment(run_every=1.5)
def _job_fragment(jid: int) -> None:
    from pages.parts.job_progress import render_job  # plotly / pandas only when a job is shown

    job = get_job(jid)
    if job is None:
        return
    render_job(job, "g_job", chart=False)
    if job["status"] in ("succeeded", "failed", "cancelled", "lost") and not st.session_state.get("g_job_seen"):
        st.session_state["g_job_seen"] = True
        if job["status"] == "succeeded" and job.get("result"):
            st.session_state["g_run_next"] = job["result"]["run_id"]
        st.rerun(scope="app")


# ----------------------------------------------------------------------------------------------- pinned pair

def pinned_pair(model: dict, run: dict, dataset_id: int, classes: list[str], opacity: float, cmap: str) -> dict:
    u = current_user()
    pair = fb.current_pair(model["id"], u["id"] if u else None)
    with st.container(border=True):
        st.markdown("**Chosen exemplar pair** " + (f"(of {md_escape(u['name'])})" if u else "(pick a user to choose)"))
        cols = st.columns([2, 2, 3])
        for col, kind in zip(cols[:2], ("good", "bad")):
            p = pair.get(kind)
            with col:
                if p is None:
                    st.caption(f"No {kind} exemplar yet: use **{kind.capitalize()}** on a card.")
                    continue
                row = ex.explanation_for(run["id"], p["image_id"])
                if row is not None:
                    st.image(ov.overlays_for(run, dataset_id, [row], opacity, cmap, side=120)[0])
                st.markdown(f"{'✅' if kind == 'good' else '❌'} **{kind}**: `{p['path']}`  \n"
                            f"{cls_name(classes, p['label'])} · AR {fmt(row['ar'] if row else p['ar'])} · "
                            f"AP {fmt(row['ap'] if row else p['ap'])}")
        with cols[2]:
            both = pair["good"] is not None and pair["bad"] is not None
            if st.button("Retrain with these", key="g_retrain", type="primary", disabled=not both,
                         help="Open the Retrain page with this pair (eXBL)"):
                st.session_state["exbl_pair"] = {"model_id": model["id"], "run_id": run["id"],
                                                 "good": pair["good"], "bad": pair["bad"]}
                try:
                    st.switch_page("pages/retrain.py")
                except Exception:  # the page path differs when run outside app.py (tests)
                    st.info("Open **Retrain** in the sidebar: the pair is passed along.")
            b1, b2 = st.columns(2)
            b1.button("Suggest", key="g_suggest_btn", on_click=do_suggest, args=(run["id"],),
                      help="max-AR image as good, min-AR as bad (the eXBL paper's choice), for you to confirm")
            b2.button("Undo last pick", key="g_undo", on_click=do_undo, args=(model["id"],), shortcut="U",
                      disabled=u is None)
            sug = st.session_state.get("g_suggest")
            if sug and sug.get("run_id") == run["id"]:
                g, b = sug.get("good"), sug.get("bad")
                if g is None and b is None:
                    st.caption("No image of this run has a defined AR (no lung masks?): nothing to suggest.")
                else:
                    st.markdown(f"Suggested: good `{g['path'] if g else '—'}` (AR {fmt(g and g['ar'])}), "
                                f"bad `{b['path'] if b else '—'}` (AR {fmt(b and b['ar'])})")
                    st.button("Use the suggestion", key="g_accept", on_click=do_accept_suggestion,
                              args=(model["id"], run["id"]), disabled=u is None)
            with st.expander("Pick history"):
                hist = fb.history(model["id"], u["id"] if u else None, limit=50)
                if hist:
                    st.dataframe([{"when": h["created_at"][:19], "user": h["user"], "kind": h["kind"],
                                   "image": h["path"], "run": h["run_id"],
                                   "undone": (h["undone_at"] or "")[:19]} for h in hist],
                                 hide_index=True)
                else:
                    st.caption("No picks yet.")
    return pair


# ----------------------------------------------------------------------------------------------- detail view

@st.cache_resource(max_entries=2, show_spinner=False)
def _classifier(model_id: int, checkpoint: str):
    """(model, lock): one copy per server process; the lock serialises sessions explaining with it."""
    import threading

    from services.models import load_classifier

    model, _ = load_classifier(model_id)
    return model, threading.Lock()


@st.cache_data(max_entries=256, show_spinner=False)
def _method_map(model_id: int, checkpoint: str, dataset_id: int, stamp: float, image_index: int, method: str,
                target: int):
    from services.explaining import explain_one

    images = ov._array(dataset_id, stamp, _home(), "images")
    model, lock = _classifier(model_id, checkpoint)
    with lock:
        e, _ = explain_one(model, images[image_index], method, target, model_id=model_id)
    return e


def _home() -> str:
    from services.settings import get_settings

    return str(get_settings().home_dir)


def detail_view(model: dict, run: dict, dataset_id: int, row: dict, page_rows: list[dict], classes: list[str],
                opacity: float, cmap: str) -> None:
    arr = {k: ov.dataset_array(dataset_id, k) for k in ("images", "lung", "marker", "has_lung", "has_marker")}
    i = int(row["image_index"])
    gray = arr["images"][i]
    emap = ov.run_maps(run)[int(row["index"])].astype("float32")
    with st.container(border=True):
        h1, h2 = st.columns([6, 1])
        h1.subheader(f"{row['path']}")
        h2.button("Close", key="g_close", on_click=do_detail, args=(None,))
        st.caption(f"true {cls_name(classes, row['label'])} · predicted {cls_name(classes, row['pred'])} "
                   f"({fmt(row['prob'])}) · explained class {cls_name(classes, row['target'])} · split {row['split']}"
                   f" · τ {run['tau']}")
        side = 220
        c = st.columns(4)
        c[0].image(ov.png(ov.gray_rgb(gray), side), caption="original")
        c[1].image(ov.png(ov.blend(gray[None], emap[None], opacity, cmap)[0], side),
                   caption=f"{METHOD_LABELS.get(run['method'], run['method'])} map")
        if arr["has_lung"][i]:
            c[2].image(ov.png(ov.mask_rgb(gray, arr["lung"][i]), side), caption="lung mask (M)")
        else:
            c[2].caption("no lung mask for this image: AR / AP are undefined (NaN)")
        if arr["has_marker"][i]:
            c[3].image(ov.png(ov.mask_rgb(gray, arr["marker"][i], color=(255, 80, 0)), side),
                       caption="confounder mask (marker)")
        else:
            c[3].caption("no confounder mask")
        st.dataframe([{SORT_LABELS.get(k, k): fmt(row[k], 3) for k in ex.METRICS}], hide_index=True,
                     use_container_width=True)
        ids = [r["image_id"] for r in page_rows]
        pos = ids.index(row["image_id"]) if row["image_id"] in ids else -1
        b = st.columns(5)
        b[0].button("Mark good", key="g_det_good", shortcut="G", on_click=do_pick,
                    args=(model["id"], run["id"], row["image_id"], "good"))
        b[1].button("Mark bad", key="g_det_bad", shortcut="B", on_click=do_pick,
                    args=(model["id"], run["id"], row["image_id"], "bad"))
        b[2].button("Previous", key="g_det_prev", shortcut="Left", disabled=pos <= 0, on_click=do_detail,
                    args=(ids[pos - 1] if pos > 0 else None,))
        b[3].button("Next", key="g_det_next", shortcut="Right", disabled=pos < 0 or pos >= len(ids) - 1,
                    on_click=do_detail, args=(ids[pos + 1] if 0 <= pos < len(ids) - 1 else None,))
        b[4].caption("Keys: G good · B bad · U undo · ← → move")
        with st.expander("Annotate this explanation"):
            annotation_form(model["id"], run["id"], row["image_id"], f"g_det_ann_{row['image_id']}")
        if st.toggle("Open in the viewer (native resolution, zoom and pan)", key="g_det_viewer"):  # issue 17
            from pages.parts.viewer import explanation_viewer
            explanation_viewer(arr, i, emap, str(row["path"]), key="g_view")
        others = [m for m in METHOD_LABELS if m != run["method"]]
        if st.toggle("Compare with the other methods (computed now for this image)", key="g_det_compare"):
            mc = st.columns(len(others))
            stamp = ov._cache_stamp(dataset_id)
            for col, m in zip(mc, others):
                with col, st.spinner(METHOD_LABELS[m]):
                    try:
                        e = _method_map(model["id"], model["checkpoint"], dataset_id, stamp, i, m, int(row["target"]))
                        col.image(ov.png(ov.blend(gray[None], e[None], opacity, cmap)[0], side // 1),
                                  caption=METHOD_LABELS[m])
                    except Exception as exc:  # one failing method must not hide the others
                        col.warning(f"{METHOD_LABELS[m]}: {exc}")


# ----------------------------------------------------------------------------------------------- page

def restore_view(classes: list[str], splits: list[str]) -> None:
    """Sort / filter / display settings survive a visit to another page (kept values that no longer fit the
    current run's classes or splits are dropped)."""
    valid = {"g_true": range(len(classes)), "g_pred": range(len(classes)), "g_split": splits}
    for k, default in VIEW_DEFAULTS.items():
        if k in st.session_state:
            continue
        v = st.session_state.get(f"_keep_{k}", default if k != "g_cmap" else ov.COLORMAPS[0])
        if k in valid:
            v = [x for x in v if x in valid[k]]
        st.session_state[k] = v


def main() -> None:
    st.title("Explanation gallery")
    show_flash()
    ds, model = selected_dataset(), selected_model()
    if ds is None:
        st.info("No dataset yet. Build the demo with `exemplar demo` (or `make run`), or import a dataset on "
                "**Data & models**; then train a classifier and come back here.")
        return
    if model is None:
        st.info(f"No classifier for dataset **{ds['name']}** yet. Train one on **Data & models** "
                f"(or `exemplar train --dataset {ds['name']}`), then compute its explanations here.")
        return
    runs = ex.list_runs(model["id"])
    explain_panel(model, ds, bool(runs))
    if not runs:
        st.info(f"No explanations for model #{model['id']} yet: start an explain job above (a worker must be "
                f"running), or run `exemplar explain --model {model['id']} --method gradcam`.")
        return
    run_ids = [r["id"] for r in runs]
    if st.session_state.get("g_run_next") in run_ids:
        st.session_state["g_run"] = st.session_state.pop("g_run_next")
    if st.session_state.get("g_run") not in run_ids:
        st.session_state["g_run"] = run_ids[0]
    labels = {r["id"]: (f"run #{r['id']} · {METHOD_LABELS.get(r['method'], r['method'])} · {r['target']} class · "
                        f"{', '.join(r['splits']) or 'all splits'} · {r['summary'].get('n', '?')} images · "
                        f"{(r['created_at'] or '')[:16]}") for r in runs}
    rid = st.selectbox("Explanation run", run_ids, format_func=labels.get, key="g_run")
    run = next(r for r in runs if r["id"] == rid)
    dataset_id = int(run.get("dataset_id") or ds["id"])
    classes = ex.dataset_classes(dataset_id) or list(model["config"].get("classes") or [])
    s = run["summary"]
    m = st.columns(6)
    m[0].metric("images", s.get("n", "?"))
    m[1].metric("accuracy", fmt(s.get("accuracy"), 3))
    m[2].metric("mean AR", fmt(s.get("ar_mean"), 3))
    m[3].metric("mean AP", fmt(s.get("ap_mean"), 3))
    m[4].metric("mean F1", fmt(s.get("f1_mean"), 3))
    m[5].metric("mean WR", fmt(s.get("wr_mean"), 3), help="share of the confounder (marker) covered by T(E)")

    restore_view(classes, ex.run_splits(rid))
    with st.expander("Sort, filter and display", expanded=True):
        c = st.columns([2, 1, 2, 2, 1, 2, 1])
        sort = c[0].selectbox("Sort by", list(SORT_LABELS), format_func=SORT_LABELS.get, key="g_sort")
        order = c[1].radio("Order", ["ascending", "descending"], key="g_order")
        tc = c[2].multiselect("True class", list(range(len(classes))), format_func=lambda i: cls_name(classes, i),
                              key="g_true")
        pc = c[3].multiselect("Predicted class", list(range(len(classes))),
                              format_func=lambda i: cls_name(classes, i), key="g_pred")
        corr = c[4].selectbox("Prediction", ["all", "correct", "wrong"], key="g_correct")
        sp = c[5].multiselect("Split", ex.run_splits(rid), key="g_split")
        ann = c[6].selectbox("Annotated", ["all", "yes", "no"], key="g_annot")
        d = st.columns([2, 2, 1, 1])
        opacity = d[0].slider("Map opacity", 0.0, 1.0, step=0.05, key="g_opacity")
        cmap = d[1].selectbox("Colormap", ov.COLORMAPS, key="g_cmap")
        per_page = d[2].selectbox("Per page", PER_PAGE, key="g_per_page")
    for k in VIEW_DEFAULTS:  # kept outside the widgets: Streamlit drops a widget's state on another page
        st.session_state[f"_keep_{k}"] = st.session_state[k]
    filt = (rid, sort, order, tuple(tc), tuple(pc), corr, tuple(sp), ann, per_page)
    if st.session_state.get("g_filt") != filt:
        st.session_state["g_filt"] = filt
        st.session_state["g_page"] = 1
    query = dict(sort=sort, descending=order == "descending", true_class=tc, pred_class=pc,
                 correct=None if corr == "all" else corr == "correct", splits=sp,
                 annotated=None if ann == "all" else ann == "yes", limit=per_page)
    page = max(1, int(st.session_state.get("g_page") or 1))
    rows, total = ex.query_explanations(rid, offset=(page - 1) * per_page, **query)
    pages = max(1, math.ceil(total / per_page))
    if page > pages:
        page = pages
        rows, total = ex.query_explanations(rid, offset=(page - 1) * per_page, **query)
    st.session_state["g_page"] = page
    d[3].number_input(f"Page (of {pages})", 1, pages, key="g_page")

    pair = pinned_pair(model, run, dataset_id, classes, opacity, cmap)

    det = st.session_state.get("g_detail")
    if det is not None:
        drow = next((r for r in rows if r["image_id"] == det), None) or ex.explanation_for(rid, det)
        if drow is not None:
            detail_view(model, run, dataset_id, drow, rows, classes, opacity, cmap)

    st.caption(f"{total} image(s) match · page {page} of {pages} · sorted by {SORT_LABELS[sort]} {order} "
               f"(NaN last) · AR and AP at τ = {run['tau']}")
    if not rows:
        st.info("No image matches these filters.")
        return
    good_id = pair["good"]["image_id"] if pair.get("good") else None
    bad_id = pair["bad"]["image_id"] if pair.get("bad") else None
    u = current_user()
    annotated = {a["image_id"]: a for a in reversed(fb.list_annotations(model_id=model["id"],
                                                                        image_ids=[r["image_id"] for r in rows]))}
    pngs = ov.overlays_for(run, dataset_id, rows, opacity, cmap)
    for start in range(0, len(rows), COLS):
        cols = st.columns(COLS)
        for col, r, img in zip(cols, rows[start: start + COLS], pngs[start: start + COLS]):
            iid = r["image_id"]
            with col.container(border=True):
                badge = " ✅ good" if iid == good_id else (" ❌ bad" if iid == bad_id else "")
                st.image(img, width="stretch")
                ok = "✔" if r["correct"] else "✘"
                st.markdown(f"`{r['path'].rsplit('/', 1)[-1]}`{badge}  \n"
                            f"true **{cls_name(classes, r['label'])}** · pred **{cls_name(classes, r['pred'])}** "
                            f"{fmt(r['prob'])} {ok}  \n"
                            f"**AR {fmt(r['ar'])}** · **AP {fmt(r['ap'])}**"
                            + (f" · {SORT_LABELS[sort]} {fmt(r[sort])}" if sort not in ("ar", "ap") else ""))
                b = st.columns(3)
                b[0].button("Good", key=f"g_good_{iid}", on_click=do_pick, args=(model["id"], rid, iid, "good"),
                            disabled=u is None or iid == good_id, help="mark as the good exemplar")
                b[1].button("Bad", key=f"g_bad_{iid}", on_click=do_pick, args=(model["id"], rid, iid, "bad"),
                            disabled=u is None or iid == bad_id, help="mark as the bad exemplar")
                b[2].button("Detail", key=f"g_det_{iid}", on_click=do_detail, args=(iid,))
                a = annotated.get(iid)
                with st.popover("Annotate" + (f" · {a['quality'] or ''} {a['rating'] or ''}" if a else "")):
                    if a:
                        st.caption(f"latest by {md_escape(a['user'])}: {a['quality'] or '–'}, {a['rating'] or '–'}/5")
                        if a["comment"]:
                            st.text(a["comment"])
                    annotation_form(model["id"], rid, iid, f"g_ann_{iid}")


main()
