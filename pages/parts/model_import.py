"""Models tab, your own classifier: a form that imports a torchvision / timm network from an uploaded weights file (a
`model.import` job) and shows its target layer and held-out figures, and a form that exports a classifier (a
`model.export` job into a new folder under EXEMPLAR_HOME) with download buttons. The web never passes a server
path a user typed, and python:… factories (code on the server) are for admins (services check both)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import require_user, selected_dataset
from pages.parts.job_progress import live_job
from pages.parts.plain import md_escape
from services.jobs import lifecycle as jobs
from services.models.catalog import list_models
from core.registries import EXPORT_FORMATS
from services.models.model_import import save_weights_upload

SOURCES_HELP = ("torchvision:NAME (any torchvision classification network, e.g. torchvision:densenet121), "
                "timm:NAME (e.g. timm:vit_tiny_patch16_224) or python:package.module:factory (your own code)")
FORMATS = tuple(EXPORT_FORMATS.names())


def metrics_frame(metrics: dict) -> pd.DataFrame:
    """One row a split: accuracy, macro AUROC, ECE, n."""
    rows = [{"split": s, "accuracy": m.get("accuracy"), "macro AUROC": m.get("auroc"), "ECE": m.get("ece"),
             "n": m.get("n")} for s, m in (metrics or {}).items()]
    return pd.DataFrame(rows, columns=["split", "accuracy", "macro AUROC", "ECE", "n"])


def _import_form(names: list[str]) -> None:
    st.markdown("##### Import your own classifier")
    cur = selected_dataset()
    with st.form("models_import_form"):
        c1, c2 = st.columns([3, 2])
        arch = c1.text_input("Architecture", key="models_import_arch", placeholder="torchvision:densenet121",
                             help=SOURCES_HELP)
        ds = c2.selectbox("Dataset", names, index=names.index(cur["name"]) if cur and cur["name"] in names else 0,
                          key="models_import_dataset")
        weights = st.file_uploader("Weights file", type=["pt", "pth", "safetensors"], key="models_import_weights",
                                   help="a state dict (read weights-only; pickled objects are refused) or safetensors")
        c3, c4, c5, c6 = st.columns(4)
        size = c3.number_input("Input size (0 = the dataset's)", 0, 1024, 0, key="models_import_size")
        channels = c4.selectbox("Channels", (3, 1), key="models_import_channels",
                                help="the network's input channels; grey images are repeated to 3")
        normalize = c5.text_input("Normalize", "imagenet", key="models_import_normalize",
                                  help="imagenet, none, or MEAN,STD")
        layer = c6.text_input("Target layer (optional)", key="models_import_layer",
                              help="default: the last spatial layer (CNN) or the last block (ViT / Swin)")
        c7, c8, c9 = st.columns(3)
        classes = c7.text_input("Output classes in order (optional)", key="models_import_classes",
                                help="A,B,…: when the network's outputs are not in the dataset's class order")
        extra = c8.text_input("Other build arguments (optional)", key="models_import_build",
                              placeholder='{"patch_size": 8}', help="JSON: the arguments your code built it with")
        name = c9.text_input("Model name (optional)", key="models_import_name")
        go = st.form_submit_button("Import", type="primary", key="models_import_go")
    if go:
        user = require_user()
        if user is None:
            return
        if not arch.strip() or weights is None:
            st.error("Give the architecture (SOURCE:NAME) and upload the weights file.")
            return
        try:
            build = json.loads(extra) if extra.strip() else None
            path = save_weights_upload(weights.name, weights.getvalue(), user_id=user["id"])
            params = {"arch": arch.strip(), "weights": str(path), "dataset": ds, "classes": classes.strip() or None,
                      "input_size": int(size) or None, "channels": int(channels), "normalize": normalize.strip(),
                      "target_layer": layer.strip() or None, "name": name.strip() or None, "build_kwargs": build}
            st.session_state["models_import_job"] = jobs.submit("model.import", params, user["id"])
        except json.JSONDecodeError:
            st.error("Other build arguments must be a JSON object, e.g. {\"patch_size\": 8}.")
        except (ValueError, PermissionError) as exc:
            st.error(md_escape(exc))


def _import_result() -> None:
    job_id = st.session_state.get("models_import_job")
    if not job_id:
        return
    live_job(int(job_id), key="models_import")
    res = (jobs.get_job(int(job_id)) or {}).get("result") or {}
    if res.get("model_id"):
        st.success(f"Model #{res['model_id']} {md_escape(res['name'])} imported · GradCAM layer "
                   f"{md_escape(res['target_layer'])}")
        st.dataframe(metrics_frame(res.get("metrics")), hide_index=True, key="models_import_metrics")
        if res.get("warning"):
            st.warning(md_escape(res["warning"]))


def _export_form() -> None:
    st.markdown("##### Export a classifier")
    models = [m for m in list_models(kind="classifier")]
    if not models:
        st.info("No classifier to export yet.")
        return
    labels = {m["id"]: f"#{m['id']} {m['name']} ({m['arch']})" for m in models}
    with st.form("models_export_form"):
        c1, c2 = st.columns([3, 1])
        mid = c1.selectbox("Model", list(labels), format_func=labels.get, key="models_export_model")
        fmt = c2.selectbox("Format", FORMATS, key="models_export_format",
                           help="safetensors: the source's key names; pt2: torch.export program; onnx: ONNX")
        go = st.form_submit_button("Export", key="models_export_go")
    if go:
        user = require_user()
        if user is None:
            return
        try:
            st.session_state["models_export_job"] = jobs.submit(
                "model.export", {"model_id": int(mid), "format": fmt}, user["id"])
        except (ValueError, PermissionError) as exc:
            st.error(md_escape(exc))
    job_id = st.session_state.get("models_export_job")
    if job_id:
        live_job(int(job_id), key="models_export")
        _downloads((jobs.get_job(int(job_id)) or {}).get("result") or {})


def _downloads(res: dict) -> None:
    """The export's files as download buttons, and what the reload check found."""
    if not res.get("path"):
        return
    st.success(f"Exported and loaded back: max |Δlogit| {res['max_abs_logit_diff']:.2e} on "
               f"{res['checked_images']} held-out images ({md_escape(res['checked_split'])})")
    cols = st.columns(3)
    for col, key in zip(cols, ("path", "card", "readme")):
        p = Path(res[key])
        if p.is_file():
            col.download_button(p.name, p.read_bytes(), file_name=p.name, key=f"models_export_dl_{key}")


def render(datasets: list[dict]) -> None:
    """Import and export forms of the Models tab."""
    names = [d["name"] for d in datasets]
    if names:
        _import_form(names)
        _import_result()
    else:
        st.info("Create or import a dataset first (Datasets tab), then import a classifier for it.")
    st.divider()
    _export_form()
