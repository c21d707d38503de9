"""The gallery's detail view of one image: original, map (with its colour bar), masks, every metric, G / B / ← / →
keys, the annotation form and the comparison with the other methods (computed once per image, in the background)."""
from __future__ import annotations

import streamlit as st

from pages.parts import compare as cmp, overlays as ov
from services.explanations.compare import compute as compare_maps
from pages.parts.plain import md_escape
from pages.parts.html_blocks import figure_row
from pages.parts.gallery_actions import (METHOD_LABELS, NA_HELP, SORT_LABELS, annotation_form, cls_name, do_detail,
                                         do_pick, fmt, saved_annotation, saved_caption)
from services.explanations import explaining as ex
from pages.parts.viewer import explanation_viewer

SIDE = 220


@st.cache_data(max_entries=256, show_spinner=False)
def detail_pngs(dataset_id: int, stamp: float, maps_path: str, map_index: int, image_index: int, opacity: float,
                cmap: str) -> tuple[bytes, bytes, bytes | None, bytes | None]:
    """(original, overlay, lung mask, marker mask) as encoded PNGs; cached per image and style."""
    arr = ov.dataset_array  # `stamp` (ov.cache_stamp) keys this cache: a rebuilt dataset cache draws afresh
    gray = arr(dataset_id, "images")[image_index]
    emap = ov.maps_file(maps_path)[map_index].astype("float32")
    has_lung = bool(arr(dataset_id, "has_lung")[image_index])
    has_marker = bool(arr(dataset_id, "has_marker")[image_index])
    lung = ov.png(ov.mask_rgb(gray, arr(dataset_id, "lung")[image_index]), SIDE) if has_lung else None
    marker = (ov.png(ov.mask_rgb(gray, arr(dataset_id, "marker")[image_index], color=(255, 80, 0)), SIDE)
              if has_marker else None)
    return (ov.png(ov.gray_rgb(gray), SIDE), ov.png(ov.blend(gray[None], emap[None], opacity, cmap)[0], SIDE), lung,
            marker)


@st.cache_data(max_entries=512, show_spinner=False)
def _compare_png(key: tuple, method: str, dataset_id: int, stamp: float, image_index: int, opacity: float,
                 cmap: str) -> bytes | None:
    res = cmp.store().result(key) or {}
    e = res.get(method)
    if e is None or isinstance(e, str):
        return None

    gray = ov.dataset_array(dataset_id, "images")[image_index]
    return ov.png(ov.blend(gray[None], e[None], opacity, cmap)[0], SIDE)


def _compare(model: dict, run: dict, dataset_id: int, row: dict, opacity: float, cmap: str) -> None:
    others = [m for m in METHOD_LABELS if m != run["method"]]
    i, target = int(row["image_index"]), int(row["target"])
    key = (model["id"], model["checkpoint"], dataset_id, i, target)
    st_ = cmp.store()
    state = st_.status(key)
    if state == "none":
        if st.button("Compare with the other methods", key="g_det_compare",
                     help="computed once for this image in the background, then kept for everyone"):
            image = ov.dataset_array(dataset_id, "images")[i].copy()
            st_.start(key, lambda: compare_maps(model["id"], model["checkpoint"], image, others, target))
            state = "pending"
        else:
            return
    if state == "pending":
        _wait_for(key)
        return
    res = st_.result(key) or {}
    if "error" in res:
        st.warning(f"The comparison failed: {res['error']}")
        return
    stamp = ov.cache_stamp(dataset_id)
    pngs = {m: _compare_png(key, m, dataset_id, stamp, i, float(opacity), cmap) for m in others}
    shown = [m for m in others if pngs[m] is not None]
    if shown:
        for col, m in zip(st.columns(len(shown)), shown):
            col.image(pngs[m], caption=METHOD_LABELS[m])
    missing = [m for m in others if pngs[m] is None]
    if missing:  # one full-width line, not a tall box in a narrow column per method
        st.caption("Not shown: " + " · ".join(f"{METHOD_LABELS[m]} ({md_escape(res.get(m, 'not computed'))})"
                                              for m in missing))


@st.fragment(run_every=1.0)
def _wait_for(key: tuple) -> None:
    """Polls the background comparison; reruns the gallery body once it is there."""
    if cmp.store().status(key) == "done":
        st.rerun(scope="app")
    st.caption("⏳ computing the other methods' maps for this image (you can keep browsing)…")


def annotate(model_id: int, run_id: int, image_id: int) -> None:
    """The viewer's saved annotation, and the form in a panel drawn only while open (four widgets fewer on every
    redraw of the detail view); the panel stays open from image to image (one key) while a reader annotates."""
    key = f"g_ann_{image_id}"
    saved = saved_annotation(model_id, image_id, key)
    if saved:
        saved_caption(saved)
    panel = st.expander("Annotate this explanation", key="g_det_annotate", on_change="rerun")
    if panel.open:
        with panel:
            annotation_form(model_id, run_id, image_id, key, saved)


def detail_view(model: dict, run: dict, dataset_id: int, row: dict, page_rows: list[dict], classes: list[str],
                opacity: float, cmap: str) -> None:
    i = int(row["image_index"])
    stamp = ov.cache_stamp(dataset_id)
    orig, over, lung, marker = detail_pngs(dataset_id, stamp, run["maps_path"], int(row["index"]), i, float(opacity),
                                           cmap)
    with st.container(border=True):
        head = st.container(horizontal=True, vertical_alignment="center")  # flex rows, not columns: fewer elements
        head.subheader(md_escape(row['path']), anchor=False)  # a file name is plain text
        head.button("Close", key="g_close", on_click=do_detail, args=(None,))
        st.caption(md_escape(f"true {cls_name(classes, row['label'])} · predicted {cls_name(classes, row['pred'])} "
                             f"({fmt(row['prob'])}) · explained class {cls_name(classes, row['target'])} · split "
                             f"{row['split']} · τ {run['tau']}"))  # plain text: the dataset's class names
        map_name = f"{METHOD_LABELS.get(run['method'], run['method'])} map"
        st.html(figure_row([  # one element: five st.image in four columns cost the browser ~10 elements
            [(orig, "original")], [(over, map_name), (ov.colorbar_png(cmap), "map value 0 → 1")],
            [(lung, "lung mask (M)") if lung is not None else
             (None, "no lung mask for this image: AR / AP are undefined (n/a)")],
            [(marker, "confounder mask (marker)") if marker is not None else (None, "no confounder mask")]]))
        # one plain line, not a table: the detail view redraws on every G / B / ← / →
        st.text(" · ".join(f"{SORT_LABELS.get(k, k)} {fmt(row[k], 3)}" for k in ex.METRICS))
        if any(row[k] is None for k in ex.METRICS):
            st.caption(NA_HELP)
        ids = [r["image_id"] for r in page_rows]
        pos = ids.index(row["image_id"]) if row["image_id"] in ids else -1
        b = st.container(horizontal=True, vertical_alignment="center")  # each button as wide as its label and key
        b.button("Mark good", key="g_det_good", shortcut="G", on_click=do_pick,
                 args=(model["id"], run["id"], row["image_id"], "good"))
        b.button("Mark bad", key="g_det_bad", shortcut="B", on_click=do_pick,
                 args=(model["id"], run["id"], row["image_id"], "bad"))
        b.button("Previous", key="g_det_prev", shortcut="Left", disabled=pos <= 0, on_click=do_detail,
                 args=(ids[pos - 1] if pos > 0 else None,))
        b.button("Next", key="g_det_next", shortcut="Right", disabled=pos < 0 or pos >= len(ids) - 1,
                 on_click=do_detail, args=(ids[pos + 1] if 0 <= pos < len(ids) - 1 else None,))
        b.caption("Keys: G good · B bad · U undo · ← → move")
        annotate(model["id"], run["id"], row["image_id"])
        if st.toggle("Open in the viewer (native resolution, zoom and pan)", key="g_det_viewer"):  # issue 17
            arr = {k: ov.dataset_array(dataset_id, k) for k in ("images", "lung", "marker", "has_lung", "has_marker")}
            explanation_viewer(arr, i, ov.run_maps(run)[int(row["index"])].astype("float32"), str(row["path"]),
                               key="g_view")
        _compare(model, run, dataset_id, row, opacity, cmap)
