"""Models tab of the Data & models page: the model registry with lineage, a form that starts a `train` job
shown live (progress, per-epoch loss / val accuracy chart, cancel), and the import / export forms of your own
classifier (pages.parts.model_import)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import require_user, selected_dataset
from pages.parts.job_progress import live_job
from pages.parts.model_import import render as render_import
from core.registries import ARCHITECTURES
from services.jobs import lifecycle as jobs
from services.models.catalog import list_datasets, list_models

ARCHS = tuple(ARCHITECTURES.names())
ARCH_HELP = {s.name: s.help for s in ARCHITECTURES}


def lineage_of(model_id: int, parents: dict[int, int | None]) -> list[int]:
    """Ancestor chain root → model from an id → parent_id map (cycles cut)."""
    chain: list[int] = []
    cur: int | None = model_id
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = parents.get(cur)
    return chain[::-1]


def _acc(m: dict, split: str) -> float | None:
    v = ((m.get("metrics") or {}).get(split) or {}).get("accuracy")
    return float(v) if v is not None else None


def registry_frame(models: list[dict], datasets: list[dict]) -> pd.DataFrame:
    names = {d["id"]: d["name"] for d in datasets}
    parents = {m["id"]: m["parent_id"] for m in models}
    rows = [{"id": m["id"], "name": m["name"], "kind": m["kind"], "arch": m["arch"],
             "dataset": names.get(m["dataset_id"], "—"),
             "lineage": " → ".join(f"#{i}" for i in lineage_of(m["id"], parents)),
             "val acc": _acc(m, "val"), "test acc": _acc(m, "test"), "shifted acc": _acc(m, "test_shifted"),
             "epochs": len((m.get("config") or {}).get("history") or []) or None,
             "created": (m["created_at"] or "")[:19].replace("T", " ")} for m in models]
    return pd.DataFrame(rows, columns=["id", "name", "kind", "arch", "dataset", "lineage", "val acc", "test acc",
                                       "shifted acc", "epochs", "created"])


def _registry(datasets: list[dict]) -> None:
    st.markdown("##### Model registry")
    models = list_models(kind=None)
    if not models:
        st.info("No model yet. Train one below, or build the demo with `exemplar demo`.")
        return
    df = registry_frame(models, datasets)
    st.dataframe(df, hide_index=True, width="stretch", key="models_table",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                for c in ("val acc", "test acc", "shifted acc")})
    st.caption("lineage: the chain of parent models (retrained versions point to the model they started from); "
               "shifted acc = accuracy on test_shifted, where the laterality marker's corner is random. "
               "Open **Evaluate** for a model card.")


def _train_form(datasets: list[dict]) -> None:
    st.markdown("##### Train a classifier")
    if not datasets:
        st.info("Create or import a dataset first (Datasets tab).")
        return
    names = [d["name"] for d in datasets]
    cur = selected_dataset()
    with st.form("models_train_form"):
        c1, c2, c3 = st.columns(3)
        ds = c1.selectbox("Dataset", names, index=names.index(cur["name"]) if cur and cur["name"] in names else 0,
                          key="models_train_dataset")
        arch = c2.selectbox("Architecture", ARCHS, key="models_train_arch",
                            format_func=lambda a: f"{a} ({ARCH_HELP[a]})")
        epochs = c3.number_input("Max epochs", 1, 500, 8, key="models_train_epochs",
                                 help="training stops early when val accuracy stops improving")
        c4, c5, c6, c7 = st.columns(4)
        lr = c4.number_input("Learning rate (0 = default)", 0.0, 1.0, 0.0, step=1e-4, format="%.4f",
                             key="models_train_lr")
        batch = c5.number_input("Batch size", 4, 1024, 64, key="models_train_batch")
        freeze = c6.number_input("Freeze first K blocks", 0, 30, 0, key="models_train_freeze")
        seed = c7.number_input("Seed", 0, 2**31 - 1, 0, key="models_train_seed")
        c8, c9, c10 = st.columns([2, 2, 1])
        name = c8.text_input("Model name (optional)", key="models_train_name", placeholder=f"{ds}-{arch}")
        pretrained = c9.text_input("Pretrained weights on the server (optional)", key="models_train_pretrained",
                                   placeholder="/path/to/mobilenet_v2.pth or .safetensors",
                                   help="a local torchvision state dict or safetensors file; nothing is downloaded")
        patience = c10.number_input("Patience", 1, 50, 3, key="models_train_patience")
        go = st.form_submit_button("Train", type="primary", key="models_train_go")
    if go:
        user = require_user()
        if user is None:
            return
        params = {"dataset": ds, "arch": arch, "epochs": int(epochs), "lr": float(lr) or None,
                  "batch_size": int(batch), "freeze_blocks": int(freeze), "seed": int(seed),
                  "patience": int(patience), "name": name.strip() or None,
                  "pretrained": pretrained.strip() or None}
        st.session_state["models_train_job"] = jobs.submit("train", params, user["id"])


def _refresh_when_done(job_id: int) -> None:
    """Rerun the whole page once when the train job ends, so the registry table shows the new model."""

    @st.fragment(run_every=2.0)
    def _watch() -> None:
        job = jobs.get_job(job_id)
        if job and job["status"] in jobs.FINAL and st.session_state.get("models_train_seen") != job_id:
            st.session_state["models_train_seen"] = job_id
            if job["status"] == "succeeded":
                st.rerun(scope="app")

    _watch()


def render() -> None:
    """The Models tab."""
    datasets = list_datasets()
    _registry(datasets)
    st.divider()
    _train_form(datasets)
    job_id = st.session_state.get("models_train_job")
    if job_id:
        live_job(int(job_id), key="models_train")
        res = (jobs.get_job(int(job_id)) or {}).get("result") or {}
        if res.get("model_id"):
            accs = ", ".join(f"{s} {m['accuracy']:.3f}" for s, m in (res.get("metrics") or {}).items())
            st.success(f"Model #{res['model_id']} registered · accuracy {accs}")
        _refresh_when_done(int(job_id))
    st.divider()
    render_import(datasets)
