"""Datasets tab of the Data & models page: counts per class and split, a sample grid with mask overlays, the last
import report, and forms that start SynthCXR synthesis or an import (server path or zip upload) as jobs."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from pages.parts.plain import md_escape

from services.presentation.palette import SPLIT_COLOURS
from pages.common import require_user, selected_dataset
from pages.parts.job_progress import live_job
from services.jobs import lifecycle as jobs
from services.data.datasets import check_import_source, check_name, get_dataset, list_datasets, load_arrays
from services.data.importing import import_job_params
from services.platform.uploads import discard_import
from services.platform.settings import get_settings

SPLITS = ("train", "val", "test", "test_shifted")
LAYOUTS = ("covid-radiography", "imagefolder", "dicom")
OVERLAYS = {"lung": ((0, 200, 80), "lung mask"), "lesion": ((255, 60, 60), "lesion mask"),
            "marker": ((255, 200, 0), "marker mask")}


def counts_frame(counts: dict) -> pd.DataFrame:
    rows = [{"class": c, "split": s, "images": int(n)} for c, per in (counts or {}).items() for s, n in per.items()]
    return pd.DataFrame(rows, columns=["class", "split", "images"])


def overlay(img: np.ndarray, masks: dict[str, np.ndarray], alpha: float = 0.45, scale: int = 3) -> np.ndarray:
    """Grayscale uint8 (H, W) + bool masks → RGB uint8, each mask tinted in its colour, upscaled (nearest)."""
    rgb = np.repeat(img[..., None].astype(np.float32), 3, axis=2)
    for name, m in masks.items():
        colour = np.array(OVERLAYS[name][0], np.float32)
        m = m.astype(bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * colour
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    return out.repeat(scale, 0).repeat(scale, 1) if scale > 1 else out


@st.cache_data(show_spinner=False, max_entries=4)
def _arrays(dataset_id: int, n_images: int):
    a = load_arrays(dataset_id)
    return {"images": a.images, "labels": a.labels, "splits": a.splits.astype(str), "ids": a.image_ids,
            "lung": a.lung, "lesion": a.lesion, "marker": a.marker, "has_lung": a.has_lung,
            "has_marker": a.has_marker, "paths": a.paths.astype(str), "classes": list(a.classes)}


def _summary(datasets: list[dict]) -> None:
    df = pd.DataFrame([{"id": d["id"], "name": d["name"], "layout": d["layout"], "images": d["n_images"],
                        "classes": len(d["classes"]), "size": d["image_size"],
                        "source": (d["meta"] or {}).get("source", "import"), "created": d["created_at"]}
                       for d in datasets])
    st.dataframe(df, hide_index=True, width="stretch", key="ds_table")


def _chart(d: dict) -> None:
    df = counts_frame(d["counts"])
    if df.empty:
        st.caption("no images")
        return
    fig = px.bar(df, x="class", y="images", color="split", barmode="group", color_discrete_map=SPLIT_COLOURS,
                 category_orders={"split": list(SPLITS), "class": list(d["classes"])})
    fig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), title=f"{d['name']}: images per class and split")
    fig.update_xaxes(title_text="class", tickangle=0)
    fig.update_yaxes(title_text="images (count)")
    st.plotly_chart(fig, key=f"ds_counts_chart_{d['id']}", width="stretch")


def _grid(d: dict) -> None:
    st.markdown("##### Samples")
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Split", ["all", *SPLITS], key="ds_grid_split")
    cls = c2.selectbox("Class", ["all", *d["classes"]], key="ds_grid_class")
    n = c3.slider("Samples", 4, 32, 12, step=4, key="ds_grid_n")
    t1, t2, t3, t4 = st.columns(4)
    show = {"lung": t1.toggle("Lung mask", value=True, key="ds_ov_lung"),
            "lesion": t2.toggle("Lesion mask", value=False, key="ds_ov_lesion"),
            "marker": t3.toggle("Marker mask", value=False, key="ds_ov_marker")}
    seed = t4.number_input("Shuffle", 0, 10_000, 0, key="ds_grid_seed")
    try:
        a = _arrays(d["id"], d["n_images"])
    except ValueError as exc:
        st.error(f"cannot load the images of {d['name']}: {exc}")
        return
    sel = np.ones(len(a["labels"]), bool)
    if split != "all":
        sel &= a["splits"] == split
    if cls != "all":
        sel &= a["labels"] == a["classes"].index(cls)
    idx = np.flatnonzero(sel)
    if not len(idx):
        st.info("no images match")
        return
    idx = np.sort(np.random.default_rng(int(seed)).choice(idx, size=min(n, len(idx)), replace=False))
    if any(show.values()):
        st.caption("overlays: " + ", ".join(f"{OVERLAYS[k][1]} (rgb{OVERLAYS[k][0]})" for k, on in show.items() if on))
    if show["marker"] and not a["has_marker"].any():
        st.caption("this dataset has no marker masks")
    cols = st.columns(4)
    for j, i in enumerate(idx):
        masks = {k: a[k][i] for k, on in show.items() if on}
        cap = f"#{a['ids'][i]} {a['classes'][a['labels'][i]]} · {a['splits'][i]}"
        cols[j % 4].image(overlay(a["images"][i], masks), caption=cap, width="stretch")


def _report(d: dict) -> None:
    rep = d.get("report") or {}
    with st.expander(f"Last import report of {d['name']}", expanded=bool(rep.get("bad"))):
        if not rep:
            st.caption("no import report")
            return
        m = st.columns(5)
        m[0].metric("scanned", rep.get("scanned", 0))
        m[1].metric("imported", rep.get("imported", 0))
        m[2].metric("unchanged", rep.get("unchanged", 0))
        m[3].metric("bad", rep.get("bad_count", len(rep.get("bad", []))))
        m[4].metric("duplicates", len(rep.get("duplicates", [])))
        st.caption(f"dataset {md_escape(d['name'])} · {rep.get('layout')} from `{rep.get('source')}` · finished "
                   f"{str(rep.get('finished_at') or 'n/a')[:19].replace('T', ' ')}"
                   + (" · --skip-bad" if rep.get("skip_bad") else ""))
        if rep.get("bad"):
            st.markdown("**Bad files** (not imported)")
            st.dataframe(pd.DataFrame(rep["bad"]), hide_index=True, width="stretch", key="ds_report_bad")
        if rep.get("duplicates"):
            st.markdown("**Duplicates** (same content as another image)")
            st.dataframe(pd.DataFrame(rep["duplicates"]), hide_index=True, key="ds_report_dups")
        deid = rep.get("deidentification")
        if deid:
            st.markdown(f"**De-identification** · {deid.get('profile')}")
            st.write({"files": deid.get("files"), "private tags removed": deid.get("private_tags_removed"),
                      "patients pseudonymised": deid.get("patients_pseudonymised")})
            rem = {**{k: v for k, v in deid.get("removed", {}).items()},
                   **{f"{k} (new UID)": v for k, v in deid.get("uids_replaced", {}).items()}}
            if rem:
                st.dataframe(pd.DataFrame({"attribute": list(rem), "files": list(rem.values())}), hide_index=True,
                             key="ds_report_deid")
            if deid.get("burned_in_annotation"):
                st.warning("Burned-in annotation flagged (pixels may show identifying text): "
                           + ", ".join(deid["burned_in_annotation"][:20]))
        if rep.get("ignored_count"):
            st.caption(f"{rep['ignored_count']} file(s) ignored (not images): "
                       + ", ".join(rep.get("ignored", [])[:10]))
        st.download_button("Download report (JSON)", json.dumps(rep, indent=2), file_name=f"{d['name']}-import.json",
                           mime="application/json", key=f"ds_report_dl_{d['id']}")


def _start(kind: str, params: dict) -> None:
    user = require_user()
    if user is None:
        return
    try:
        check_name(params["name"])
        if kind == "data.import":  # a wrong path is refused here, not after a queued job ran
            check_import_source(params["path"], params["layout"], params.get("labels"),
                                shown=params.pop("shown", None))  # a damaged zip is refused before it is queued
    except ValueError as exc:
        st.error(md_escape(str(exc)))  # names a path or an uploaded file's name: plain text
        if params.get("owned"):  # a zip the browser sent for an import that was refused
            Path(params["path"]).unlink(missing_ok=True)
        return
    if kind == "data.import":  # the job names its source by upload ids, never by path (docs/architecture.md)
        params = import_job_params(params.pop("path"), params.pop("layout"), params.pop("name"),
                                   labels=params.pop("labels", None), owned=params.pop("owned", False), **params)
    try:
        st.session_state["ds_job"] = jobs.submit(kind, params, user["id"])
    except Exception:
        if kind == "data.import" and jobs.active_duplicate(kind, params) is None:
            discard_import(params)  # no job names these uploads: they go again
        raise
    st.session_state["ds_job_kind"] = kind
    st.session_state.pop("ds_job_seen", None)


def _when_done(job: dict) -> None:
    """A finished synth / import job: show its dataset (and its own import report) and refresh every table once."""
    if job["status"] not in jobs.FINAL or st.session_state.get("ds_job_seen") == job["id"]:
        return
    st.session_state["ds_job_seen"] = job["id"]
    if job["status"] == "succeeded" and (job.get("result") or {}).get("name"):
        st.session_state["ds_pick_next"] = job["result"]["name"]
        st.rerun(scope="app")


def _forms() -> None:
    left, right = st.columns(2)
    with left, st.form("ds_synth_form"):
        st.markdown("##### Synthesise SynthCXR")
        name = st.text_input("Name", "demo", key="ds_synth_name")
        c1, c2 = st.columns(2)
        n = c1.number_input("Images", 64, 100_000, 2400, step=100, key="ds_synth_n")
        size = c2.selectbox("Size", [32, 64, 128, 256, 512], index=1, key="ds_synth_size")
        conf = c1.slider("Confounder p", 0.0, 1.0, 0.9, 0.05, key="ds_synth_conf",
                         help="probability that the laterality marker sits in its class corner (random in test_shifted)")
        seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="ds_synth_seed")
        if st.form_submit_button("Synthesise", type="primary", key="ds_synth_go"):
            _start("data.synth", {"name": name.strip(), "n": int(n), "size": int(size), "confounder": float(conf),
                                  "seed": int(seed)})
    with right, st.form("ds_import_form"):
        st.markdown("##### Import")
        source = st.radio("Source", ["server path", "zip upload"], horizontal=True, key="ds_imp_source")
        path = st.text_input("Folder or .zip on the server", key="ds_imp_path", placeholder="/data/COVID-19_Radiography")
        upload = st.file_uploader("…or a zip (small sets)", type=["zip"], key="ds_imp_upload")
        c1, c2 = st.columns(2)
        layout = c1.selectbox("Layout", LAYOUTS, key="ds_imp_layout")
        iname = c2.text_input("Name", key="ds_imp_name")
        labels = st.text_input("Labels CSV (path,label[,split]; dicom)", key="ds_imp_labels")
        c3, c4 = st.columns(2)
        isize = c3.selectbox("Size", ["native", 32, 64, 128, 224, 256, 512], index=0, key="ds_imp_size")  # i17
        skip = c4.checkbox("Skip bad files", key="ds_imp_skip")
        burned = st.checkbox("dicom: import images flagged burned-in annotation (text in the pixels)",
                             key="ds_imp_burned")
        if st.form_submit_button("Import", type="primary", key="ds_imp_go"):
            params = {"layout": layout, "name": iname.strip(), "skip_bad": bool(skip),
                      "size": None if isize == "native" else int(isize),
                      "labels": labels.strip() or None}
            if layout == "dicom":
                params["allow_burned_in"] = bool(burned)
            if source == "zip upload":
                if upload is None:
                    st.error("choose a zip file to upload")
                    return
                dest = get_settings().path("uploads") / f"upload-{uuid.uuid4().hex}.zip"
                dest.write_bytes(upload.getvalue())
                params.update(path=str(dest), owned=True,  # deleted with its upload once the import has ended
                              shown=f"the uploaded zip {upload.name}")
            elif not path.strip():
                st.error("enter a folder or .zip path on the server")
                return
            else:
                params["path"] = path.strip()
            _start("data.import", params)


def render() -> None:
    """The Datasets tab."""
    datasets = list_datasets()
    if not datasets:
        st.info("No dataset yet. Synthesise the SynthCXR demo below (or run `exemplar data synth --name demo`), "
                "or import your own images.")
    else:
        _summary(datasets)
        names = [d["name"] for d in datasets]
        cur = selected_dataset()
        idx = names.index(cur["name"]) if cur and cur["name"] in names else len(names) - 1
        if st.session_state.get("ds_pick_next") in names:  # the dataset a job just made, with its report
            st.session_state["ds_pick"] = st.session_state.pop("ds_pick_next")
        pick = st.selectbox("Dataset", names, index=idx, key="ds_pick")
        d = get_dataset(pick)
        _chart(d)
        _grid(d)
        _report(d)
    st.divider()
    _forms()
    job_id = st.session_state.get("ds_job")
    if job_id:
        live_job(int(job_id), key="ds_job", extra=_when_done)
