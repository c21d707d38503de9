"""The explanation gallery: GradCAM maps of a whole dataset ranked by AR (AP beside it), good / bad exemplar
picks for eXBL, explanation-quality annotations, and a detail view comparing methods.

Rows are sorted, filtered and paginated in SQL (services.explanations.explaining.query_explanations); overlays for a page
are rendered in one numpy/PIL batch and cached as encoded PNGs. The body (settings, pinned pair, detail view,
grid) is one st.fragment: a click reruns only it, never the sidebar. Settings live in the URL (pages.parts.state).
"""
from __future__ import annotations

import math

import streamlit as st

from core.data.roles import role

from pages.common import refuse_open_bind, current_user, selected_dataset, selected_model
from pages.parts import overlays as ov, state as url
from pages.parts.plain import md_escape
from pages.parts.html_blocks import card_body, metric_row
from pages.parts.card_grid import card_grid
from pages.parts.gallery_actions import (CARD_METRICS, METHOD_LABELS, NA_HELP, SORT_LABELS, card_choice, cls_name,
                                         do_accept_suggestion, do_card, do_suggest, do_undo, fmt, show_flash)
from services.explanations import explaining as ex, feedback as fb
from services.jobs.lifecycle import submit
from services.team.roles import allowed
from pages.parts.gallery_detail import detail_view
from pages.parts.job_progress import live_job

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

PER_PAGE = (12, 24, 48, 96)
VIEW_DEFAULTS = {"g_sort": "ar", "g_order": "ascending", "g_true": [], "g_pred": [], "g_correct": "all",
                 "g_split": [], "g_annot": "all", "g_opacity": 0.45, "g_cmap": None,
                 "g_per_page": url.GALLERY_PARAMS["per_page"][1]}
# the settings filter_controls draws (only while its panel is open)
PANEL_KEYS = ("g_correct", "g_annot", "g_split", "g_true", "g_pred", "g_opacity", "g_cmap", "g_per_page")
CARD_PX = 262  # wide enough for Good | Bad | Detail on one line: three cards a row at 1280 px, four at 1600 px
THUMB_PX = 240  # thumbnails encoded at about the card's image width (not upscaled by the browser)


# ----------------------------------------------------------------------------------------------- start here

def start_here(pair: dict, u: dict | None) -> None:
    """One line with the story's next step: pick a good and a bad map → retrain → before / after report."""
    has_good, has_bad = pair.get("good") is not None, pair.get("bad") is not None
    step = 1 if not (has_good and has_bad) else 2
    marks = ["✅" if has_good and has_bad else "①", "②", "③"]
    texts = ["pick a **good** map (on the lungs, high AR) and a **bad** one (on the marker, low AR) with **Good** / "
             "**Bad** on the cards", "**Retrain with these** (eXBL, a worker job)",
             "read the **Before / after** report"]
    st.info("**Start here** · " + " → ".join(f"{m} {t}" for m, t in zip(marks, texts))
            + ("" if u else " · pick or create a user in the sidebar to choose maps"),
            icon="👉" if step == 1 else "🔁")


# ----------------------------------------------------------------------------------------------- explain job

def explain_panel(model: dict, has_runs: bool) -> None:
    """Open at first (no run yet); once runs exist it opens on a click, and its controls are drawn only while it is
    open: a closed expander's widgets are still sent and rendered, ~0.1 s of every navigation to the gallery."""
    panel = st.expander("Compute explanations (explain job)", expanded=not has_runs, key="g_explain",
                        on_change="rerun")
    if panel.open:
        explain_controls(panel, model)
    jid = st.session_state.get("g_job")
    if jid:
        # polls every 0.25 s while the job runs (Cancel → "cancelled" within ~2 s with the worker's 0.3 s grace),
        # then draws it once without a timer
        live_job(jid, "g_job", every=0.25, chart=False, extra=_open_new_run)


def explain_controls(panel, model: dict) -> None:
    """Method, splits, target and τ of an explain job, and the button that queues it for the worker."""
    with panel:
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


def _open_new_run(job: dict) -> None:
    """Once the explain job has succeeded the gallery shows its run, once (the user may pick another run after)."""
    if job["status"] == "succeeded" and job.get("result") and not st.session_state.get("g_job_seen"):
        st.session_state["g_job_seen"] = True
        st.session_state["g_run_next"] = job["result"]["run_id"]


# ----------------------------------------------------------------------------------------------- pinned pair

def own_pair(model_id: int, u: dict | None) -> dict:
    """The viewer's own good / bad picks; none without a user (another user's picks are never shown as theirs)."""
    return fb.current_pair(model_id, u["id"]) if u else {"good": None, "bad": None}


def pinned_pair(model: dict, run: dict, dataset_id: int, classes: list[str], opacity: float, cmap: str,
                u: dict | None, pair: dict) -> None:
    """The viewer's good and bad exemplars (`pair`, own_pair: read once a run), Retrain, Suggest, Undo, history."""
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
                png = ov.overlays_for(run, dataset_id, [row], opacity, cmap, side=120)[0] if row is not None else None
                st.html(card_body(png, f"map of {p['path']}",  # one element (pages/parts/html_blocks.py)
                                  f"{'✅' if kind == 'good' else '❌'} {kind}: {p['path']}\n"
                                  f"{cls_name(classes, p['label'])} · AR {fmt(row['ar'] if row else p['ar'])} · "
                                  f"AP {fmt(row['ap'] if row else p['ap'])}", img_px=120))
        with cols[2]:
            both = pair["good"] is not None and pair["bad"] is not None
            if u is not None and not allowed(u["role"], "exbl"):  # a reader's pair feeds a researcher's retrain
                st.caption("Your pair is saved: a researcher can start a retrain with it (readers do not retrain).")
            elif st.button("Retrain with these", key="g_retrain", type="primary", disabled=not both,
                           help="Open the Retrain page with this pair (eXBL)"):
                st.session_state["exbl_pair"] = {"model_id": model["id"], "run_id": run["id"],
                                                 "good": pair["good"], "bad": pair["bad"]}
                try:
                    st.switch_page("pages/retrain.py")
                except Exception:  # the page path differs when run outside app.py (tests)
                    st.info("Open **Retrain** in the sidebar: the pair is passed along.")
            act = st.container(horizontal=True)  # a flex row, not columns: fewer elements
            act.button("Suggest", key="g_suggest_btn", on_click=do_suggest, args=(run["id"],),
                       help="max-AR image as good, min-AR as bad (the eXBL paper's choice), for you to confirm")
            act.button("Undo last pick", key="g_undo", on_click=do_undo, args=(model["id"],), shortcut="U",
                       disabled=u is None)
            sug = st.session_state.get("g_suggest")
            if sug and sug.get("run_id") == run["id"]:
                g, b = sug.get("good"), sug.get("bad")
                if g is None and b is None:
                    st.caption("No image of this run has a defined AR (no lung masks?): nothing to suggest.")
                else:
                    st.markdown(f"Suggested: good {md_escape(g['path'] if g else '—')} (AR {fmt(g and g['ar'])}), "
                                f"bad {md_escape(b['path'] if b else '—')} (AR {fmt(b and b['ar'])})")
                    st.button("Use the suggestion", key="g_accept", on_click=do_accept_suggestion,
                              args=(model["id"], run["id"]), disabled=u is None)
            history = st.expander("Pick history", key="g_hist", on_change="rerun")
            if history.open:  # drawn only while open: a table on every click costs the browser ~70 ms
                pick_history(history, model["id"], u)


def pick_history(box, model_id: int, u: dict | None) -> None:
    hist = fb.history(model_id, u["id"] if u else None, limit=50)
    if hist:
        box.dataframe([{"when": h["created_at"][:19], "user": h["user"], "kind": h["kind"], "image": h["path"],
                        "run": h["run_id"], "undone": (h["undone_at"] or "")[:19]} for h in hist], hide_index=True)
    else:
        box.caption("No picks yet.")


# ----------------------------------------------------------------------------------------------- page

@st.cache_data(max_entries=64, show_spinner=False)
def run_splits(run_id: int, maps_path: str) -> list[str]:
    """The splits among a run's images: a DISTINCT over every row of the run (16 ms at 21k images), and a run's rows
    never change once written, so it is asked once per run (keyed by its maps file too: ids restart in a new home)."""
    return ex.run_splits(run_id)


def restore_view(classes: list[str], splits: list[str]) -> None:
    """Sort / filter / display settings survive a visit to another page (kept in session state) and a reload (kept
    in the URL); kept values that no longer fit the current run's classes or splits are dropped."""
    valid = {"g_true": range(len(classes)), "g_pred": range(len(classes)), "g_split": splits,
             "g_cmap": ov.COLORMAPS, "g_per_page": PER_PAGE, "g_sort": list(SORT_LABELS),
             "g_order": ["ascending", "descending"], "g_correct": ["all", "correct", "wrong"],
             "g_annot": ["all", "yes", "no"]}
    names = {key: name for name, (key, _) in url.GALLERY_PARAMS.items()}
    for k, default in VIEW_DEFAULTS.items():
        if k in st.session_state:
            continue
        v = st.session_state.get(f"_keep_{k}")
        if v is None:
            v = url.url_value(names[k])
        if v is None:
            v = default if k != "g_cmap" else ov.COLORMAPS[0]
        if k in valid:
            v = [x for x in v if x in valid[k]] if isinstance(v, list) else (v if v in valid[k] else
                                                                          (default or ov.COLORMAPS[0]))
        if k == "g_opacity":
            v = min(1.0, max(0.0, float(v)))
        st.session_state[k] = v
    if "g_page" not in st.session_state and url.url_value("page"):
        st.session_state["g_page"] = max(1, int(url.url_value("page")))
    if "g_detail" not in st.session_state and url.url_value("detail"):
        st.session_state["g_detail"] = int(url.url_value("detail"))


def settings(splits: list[str], classes: list[str]):
    """Sort, order and page always; the filters, the map's look and the page size in a panel drawn only while open
    (the line above the cards names the filters in force): eight widgets fewer on every navigation to the gallery.
    Returns the row that the page number joins once the number of pages is known."""
    row = st.container(horizontal=True, vertical_alignment="bottom")
    row.selectbox("Sort by", list(SORT_LABELS), format_func=SORT_LABELS.get, key="g_sort", width=260)
    row.radio("Order", ["ascending", "descending"], key="g_order", horizontal=True, width=250)
    panel = st.expander("Filter and display", key="g_more", on_change="rerun")
    if panel.open:
        filter_controls(panel, splits, classes)
    else:  # undrawn, their widget state may have been reset by Streamlit (after another page): the kept value rules
        for k in PANEL_KEYS:
            if f"_keep_{k}" in st.session_state:
                st.session_state[k] = st.session_state[f"_keep_{k}"]
    for k in VIEW_DEFAULTS:  # kept outside the widgets: Streamlit drops a widget's state on another page
        st.session_state[f"_keep_{k}"] = st.session_state[k]
    return row


def filter_controls(panel, splits: list[str], classes: list[str]) -> None:
    """Which images (prediction, annotation, split, true and predicted class), how their maps look, how many a page."""
    with panel:
        f = st.columns([1, 1, 2])  # every label and value readable at 1280 px
        f[0].selectbox("Prediction", ["all", "correct", "wrong"], key="g_correct")
        f[1].selectbox("Annotated", ["all", "yes", "no"], key="g_annot")
        f[2].multiselect("Split", splits, key="g_split", placeholder="any")
        g = st.columns(2)
        g[0].multiselect("True class", list(range(len(classes))), format_func=lambda i: cls_name(classes, i),
                         key="g_true", placeholder="any")
        g[1].multiselect("Predicted class", list(range(len(classes))), format_func=lambda i: cls_name(classes, i),
                         key="g_pred", placeholder="any")
        d = st.columns([2, 2, 1])
        d[0].slider("Map opacity", 0.0, 1.0, step=0.05, key="g_opacity")
        d[2].selectbox("Per page", PER_PAGE, key="g_per_page")
        d[1].selectbox("Colormap", ov.COLORMAPS, key="g_cmap")
        d[1].image(ov.colorbar_png(st.session_state["g_cmap"]), caption="map value E: 0 (left) → 1 (right)",
                   width="stretch")


def active_filters(classes: list[str]) -> str:
    """The filters in force, for the line above the cards (the panel that sets them may be closed); plain text
    (class and split names come from the dataset: the caller escapes the whole line)."""
    ss = st.session_state
    parts = [f"prediction {ss['g_correct']}" if ss["g_correct"] != "all" else "",
             f"annotated {ss['g_annot']}" if ss["g_annot"] != "all" else "",
             "split " + ", ".join(ss["g_split"]) if ss["g_split"] else "",
             "true class " + ", ".join(cls_name(classes, i) for i in ss["g_true"]) if ss["g_true"] else "",
             "predicted class " + ", ".join(cls_name(classes, i) for i in ss["g_pred"]) if ss["g_pred"] else ""]
    shown = [p for p in parts if p]
    return "filtered by " + " · ".join(shown) if shown else "no filter"


def page_rows(rid: int, page_box) -> tuple[list[dict], int, int, int]:
    ss = st.session_state
    sort, order, per_page = ss["g_sort"], ss["g_order"], ss["g_per_page"]
    filt = (rid, sort, order, tuple(ss["g_true"]), tuple(ss["g_pred"]), ss["g_correct"], tuple(ss["g_split"]),
            ss["g_annot"], per_page)
    if ss.get("g_filt") not in (None, filt):
        ss["g_page"] = 1
    ss["g_filt"] = filt
    query = dict(sort=sort, descending=order == "descending", true_class=ss["g_true"], pred_class=ss["g_pred"],
                 correct=None if ss["g_correct"] == "all" else ss["g_correct"] == "correct", splits=ss["g_split"],
                 annotated=None if ss["g_annot"] == "all" else ss["g_annot"] == "yes", limit=per_page)
    page = max(1, int(ss.get("g_page") or 1))
    rows, total = ex.query_explanations(rid, offset=(page - 1) * per_page, **query)
    pages = max(1, math.ceil(total / per_page))
    if page > pages:
        page = pages
        rows, total = ex.query_explanations(rid, offset=(page - 1) * per_page, **query)
    ss["g_page"] = page
    page_box.number_input(f"Page (of {pages})", 1, pages, key="g_page", width=150)
    return rows, total, page, pages


def card(r: dict, img: bytes, classes: list[str], sort: str, good_id, bad_id, detail_id, a) -> dict:
    """One thumbnail card for the card grid (pages/parts/card_grid.py): its id, its map and lines as HTML (escaped:
    html_blocks.card_body) and the option its Good / Bad / Detail buttons show selected (card_choice)."""
    iid = r["image_id"]
    badge = " · ✅ good" if iid == good_id else (" · ❌ bad" if iid == bad_id else "")
    ok = "✔" if r["correct"] else "✘"
    name = r["path"].rsplit("/", 1)[-1]
    text = (f"{name}\n{r.get('split') or 'n/a'} split · {role(r.get('split'))}\n"
            f"true {cls_name(classes, r['label'])}\npred {cls_name(classes, r['pred'])} {fmt(r['prob'])} {ok}\n"
            + " · ".join(f"{SORT_LABELS[k]} {fmt(r[k])}" for k in CARD_METRICS)
            + (f" · {SORT_LABELS[sort]} {fmt(r[sort])}" if sort not in CARD_METRICS else "") + badge
            + (f"\nannotated by {a['user']}: {a['quality'] or 'n/a'} · {a['rating'] or 'n/a'}/5" if a else ""))
    body = card_body(img, f"map of {name}", text, tooltip=NA_HELP if any(r[k] is None for k in CARD_METRICS) else None)
    return {"id": iid, "body": body, "shown": card_choice(iid, good_id, bad_id, detail_id)}


@st.fragment
def body(model: dict, run: dict, dataset_id: int, classes: list[str]) -> None:
    """Settings, pinned pair, detail view and grid: one fragment, so a click reruns only this."""
    show_flash()
    u = current_user()
    pair = own_pair(model["id"], u)
    start_here(pair, u)
    rid = run["id"]
    splits = run_splits(rid, str(run["maps_path"]))
    restore_view(classes, splits)
    page_box = settings(splits, classes)
    ss = st.session_state
    opacity, cmap, sort = ss["g_opacity"], ss["g_cmap"], ss["g_sort"]
    rows, total, page, pages = page_rows(rid, page_box)
    pinned_pair(model, run, dataset_id, classes, opacity, cmap, u, pair)
    det = ss.get("g_detail")
    if det is not None:
        drow = next((r for r in rows if r["image_id"] == det), None) or ex.explanation_for(rid, det)
        if drow is not None:
            detail_view(model, run, dataset_id, drow, rows, classes, opacity, cmap)
    url.save_gallery(ss)
    line = (f"{total} image(s) match ({active_filters(classes)}) · page {page} of {pages} · sorted by "
            f"{SORT_LABELS[sort]} {ss['g_order']} (n/a last) · AR and AP at τ = {run['tau']} · n/a = undefined "
            "(no lung mask or an all-zero map)")
    st.caption(md_escape(line))  # plain text: it names the dataset's classes and splits
    if not rows:
        st.info("No image matches these filters.")
        return
    good_id = pair["good"]["image_id"] if pair.get("good") else None
    bad_id = pair["bad"]["image_id"] if pair.get("bad") else None
    annotated = {a["image_id"]: a for a in reversed(fb.list_annotations(model_id=model["id"],
                                                                        image_ids=[r["image_id"] for r in rows]))}
    pngs = ov.overlays_for(run, dataset_id, rows, opacity, cmap, side=THUMB_PX)
    det = st.session_state.get("g_detail")
    cards = [card(r, img, classes, sort, good_id, bad_id, det, annotated.get(r["image_id"]))
             for r, img in zip(rows, pngs)]
    card_grid(cards, CARD_PX, lambda iid, action, shown: do_card(model["id"], rid, iid, action, shown))


def pick_run(runs: list[dict]) -> dict:
    run_ids = [r["id"] for r in runs]
    if st.session_state.get("g_run_next") in run_ids:
        st.session_state["g_run"] = st.session_state.pop("g_run_next")
    if "g_run" not in st.session_state and url.url_value("run") in run_ids:
        st.session_state["g_run"] = url.url_value("run")
    if st.session_state.get("g_run") not in run_ids:
        st.session_state["g_run"] = run_ids[0]
    labels = {r["id"]: (f"run #{r['id']} · {METHOD_LABELS.get(r['method'], r['method'])} · {r['target']} class · "
                        f"{', '.join(r['splits']) or 'all splits'} · {r['summary'].get('n', '?')} images · "
                        f"{(r['created_at'] or '')[:16]}") for r in runs}
    rid = st.selectbox("Explanation run", run_ids, format_func=labels.get, key="g_run")
    return next(r for r in runs if r["id"] == rid)


def summary(run: dict) -> None:
    """The run's six headline numbers in one row (one st.html: six st.metric cost the browser ~0.1 s a navigation)."""
    s = run["summary"]
    st.html(metric_row([
        ("images", s.get("n", "n/a"), None), ("accuracy", fmt(s.get("accuracy"), 3), None),
        ("mean AR", fmt(s.get("ar_mean"), 3), "mean over images where AR is defined; " + NA_HELP),
        ("mean AP", fmt(s.get("ap_mean"), 3), "AR alone rewards a map that lights up everything"),
        ("mean F1", fmt(s.get("f1_mean"), 3), None),
        ("mean WR", fmt(s.get("wr_mean"), 3), "share of the confounder (marker) covered by T(E); n/a when the images "
                                               "have no marker mask")]))


def main() -> None:
    st.title("Explanation gallery")
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
    u = current_user()
    if u is None or allowed(u["role"], "explain"):  # a reader browses and picks; a researcher computes maps
        explain_panel(model, bool(runs))
    elif not runs:
        st.info(f"No explanations for model #{model['id']} yet: a researcher computes them (your role is reader).")
        return
    if not runs:
        st.info(f"No explanations for model #{model['id']} yet: start an explain job above (a worker must be "
                f"running), or run `exemplar explain --model {model['id']} --method gradcam`.")
        return
    run = pick_run(runs)
    dataset_id = int(run.get("dataset_id") or ds["id"])
    classes = ex.dataset_classes(dataset_id) or list(model["config"].get("classes") or [])
    summary(run)
    body(model, run, dataset_id, classes)


main()
