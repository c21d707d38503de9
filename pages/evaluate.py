"""Evaluate page: a classifier's model card (metrics per split, confusion matrix, per-class table, training
curve), two models side by side, and the method comparison (Methods tab, when its area is built)."""
from __future__ import annotations


import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from services.presentation.palette import HEATMAP_SCALE
from pages.common import refuse_open_bind, selected_model
from pages.parts.captions import compare_sentence
from services.models.catalog import list_datasets, list_models
from pages.parts.methods_view import render

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

SPLITS = ("val", "test", "test_shifted")
NA_SPLIT = "n/a: this model was not evaluated on that split"
SPLIT_HELP = {"val": "validation (iid)", "test": "test (iid: marker in its class corner with probability p)",
              "test_shifted": "test_shifted (marker corner random: what the model knows without the shortcut)"}


def splits_frame(metrics: dict) -> pd.DataFrame:
    rows = [{"split": s, "images": m.get("n"), "accuracy": m.get("accuracy"), "macro F1": m.get("macro_f1")}
            for s in SPLITS if (m := (metrics or {}).get(s))]
    return pd.DataFrame(rows, columns=["split", "images", "accuracy", "macro F1"])


def per_class_frame(split_metrics: dict) -> pd.DataFrame:
    rows = [{"class": c, **v} for c, v in (split_metrics.get("per_class") or {}).items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def confusion_figure(split_metrics: dict, classes: list[str], normalise: bool, title: str = ""):
    cm = np.asarray(split_metrics.get("confusion") or [], dtype=float)
    if cm.size == 0:
        return None
    z = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    fig = px.imshow(z, x=classes, y=classes, text_auto=".2f" if normalise else True, color_continuous_scale=HEATMAP_SCALE,
                    labels={"x": "predicted", "y": "true", "color": "share" if normalise else "images"},
                    zmin=0, zmax=1 if normalise else None, aspect="auto")
    fig.update_layout(height=380, margin=dict(l=0, r=0, t=40 if title else 10, b=0), title=title or None,
                      coloraxis_colorbar=dict(title="share of row" if normalise else "images"))
    fig.update_xaxes(title_text="predicted class", tickangle=0)
    fig.update_yaxes(title_text="true class")
    return fig


def _classes(model: dict) -> list[str]:
    cfg = model.get("config") or {}
    if cfg.get("classes"):
        return list(cfg["classes"])
    for m in (model.get("metrics") or {}).values():
        if isinstance(m, dict) and m.get("per_class"):
            return list(m["per_class"])
    return []


def _label(m: dict) -> str:
    return f"#{m['id']} {m['name']} ({m['arch']})"


def _pick(models: list[dict], key: str, label: str, default_id: int | None) -> dict:
    ids = [m["id"] for m in models]
    idx = ids.index(default_id) if default_id in ids else len(ids) - 1
    return st.selectbox(label, models, index=idx, format_func=_label, key=key)


def model_card(m: dict, datasets: dict[int, str]) -> None:
    cfg, metrics = m.get("config") or {}, m.get("metrics") or {}
    hist = cfg.get("history") or []
    cols = st.columns(4)
    cols[0].metric("architecture", m["arch"])
    cols[1].metric("dataset", datasets.get(m["dataset_id"], "n/a"))
    t, sh = (metrics.get("test") or {}).get("accuracy"), (metrics.get("test_shifted") or {}).get("accuracy")
    cols[2].metric("test accuracy", f"{t:.3f}" if t is not None else "n/a", help=None if t is not None else NA_SPLIT)
    cols[3].metric("test_shifted accuracy", f"{sh:.3f}" if sh is not None else "n/a",
                   help=None if sh is not None else NA_SPLIT,
                   delta=f"{sh - t:+.3f} vs test" if t is not None and sh is not None else None)
    train = cfg.get("train") or {}
    bits = [f"parent #{m['parent_id']}" if m.get("parent_id") else "no parent",
            f"{len(hist)} epoch(s), best {cfg.get('best_epoch')}" if hist else None,
            f"lr {train.get('lr')}" if train.get("lr") else None,
            f"freeze {cfg.get('freeze_blocks')} block(s)" if cfg.get("freeze_blocks") else None,
            "pretrained" if cfg.get("pretrained") else None,
            f"device {cfg.get('device')}" if cfg.get("device") else None,
            f"created {(m.get('created_at') or '')[:19].replace('T', ' ')}"]
    st.caption(" · ".join(b for b in bits if b))
    df = splits_frame(metrics)
    if df.empty:
        st.info("No evaluation metrics are recorded for this model.")
        return
    st.markdown("##### Metrics per split")
    st.dataframe(df, hide_index=True, width="stretch", key=f"eval_splits_{m['id']}",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in ("accuracy", "macro F1")})
    st.caption("; ".join(SPLIT_HELP[s] for s in df["split"]))
    present = list(df["split"])
    c1, c2 = st.columns([3, 1])
    split = c1.segmented_control("Split", present, default="test" if "test" in present else present[0],
                                 key="eval_card_split") or present[0]
    norm = c2.toggle("Row-normalised", value=False, key="eval_card_norm")
    left, right = st.columns(2)
    with left:
        st.markdown(f"##### Confusion matrix · {split}")
        fig = confusion_figure(metrics[split], _classes(m), norm)
        if fig is not None:
            st.plotly_chart(fig, key=f"eval_cm_{m['id']}_{split}_{int(norm)}", width="stretch")
    with right:
        st.markdown(f"##### Per class · {split}")
        st.dataframe(per_class_frame(metrics[split]), hide_index=True, width="stretch",
                     key=f"eval_per_class_{m['id']}_{split}",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                    for c in ("precision", "recall", "f1")})
    if hist:
        st.markdown("##### Training")
        h = pd.DataFrame(hist)
        ys = [c for c in ("train_loss", "val_loss", "val_acc") if c in h]
        fig = px.line(h, x="epoch", y=ys, markers=True)
        fig.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0), legend_title_text="series")
        fig.update_xaxes(title_text="epoch", tickformat="d", dtick=1 if len(h) <= 20 else None)
        fig.update_yaxes(title_text="loss (CE) / accuracy (0–1)")
        st.plotly_chart(fig, key=f"eval_hist_{m['id']}", width="stretch")


def compare_frame(a: dict, b: dict) -> pd.DataFrame:
    rows = []
    for s in SPLITS:
        ma, mb = (a.get("metrics") or {}).get(s) or {}, (b.get("metrics") or {}).get(s) or {}
        if not ma and not mb:
            continue
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
            va, vb = ma.get(key), mb.get(key)
            rows.append({"split": s, "metric": name, f"A #{a['id']}": va, f"B #{b['id']}": vb,
                         "B − A": (vb - va) if va is not None and vb is not None else None})
    return pd.DataFrame(rows)


def compare(models: list[dict]) -> None:
    if len(models) < 2:
        st.info("Train a second classifier to compare two models side by side.")
        return
    cur = selected_model()
    a_default = cur["id"] if cur else models[-2]["id"]
    c1, c2 = st.columns(2)
    with c1:
        a = _pick(models, "eval_cmp_a", "Model A", a_default)
    others = [m for m in models if m["id"] != a["id"]]
    b_default = next((m["id"] for m in others if m.get("parent_id") == a["id"]), a.get("parent_id") or others[-1]["id"])
    with c2:
        b = _pick(others, "eval_cmp_b", "Model B", b_default)
    df = compare_frame(a, b)
    if df.empty:
        st.info("Neither model has evaluation metrics.")
        return
    num = [c for c in df.columns if c not in ("split", "metric")]
    st.dataframe(df, hide_index=True, width="stretch", key="eval_cmp_table",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in num})
    st.caption(compare_sentence(df, a, b))
    splits = [s for s in SPLITS if s in (a.get("metrics") or {}) and s in (b.get("metrics") or {})]
    if not splits:
        return
    split = st.segmented_control("Split", splits, default="test_shifted" if "test_shifted" in splits else splits[0],
                                 key="eval_cmp_split") or splits[0]
    cols = st.columns(2)
    for col, m, tag in ((cols[0], a, "A"), (cols[1], b, "B")):
        with col:
            fig = confusion_figure(m["metrics"][split], _classes(m), True, f"{tag}: {_label(m)} · {split}")
            if fig is not None:
                st.plotly_chart(fig, key=f"eval_cmp_cm_{tag}_{m['id']}_{split}", width="stretch")
    pa, pb = per_class_frame(a["metrics"][split]), per_class_frame(b["metrics"][split])
    if not pa.empty and not pb.empty:
        f1 = pd.DataFrame({"class": pa["class"], f"F1 A #{a['id']}": pa["f1"],
                           f"F1 B #{b['id']}": pb.set_index("class").reindex(pa["class"])["f1"].to_numpy()})
        st.dataframe(f1, hide_index=True, width="stretch", key="eval_cmp_per_class")


def methods() -> None:
    render()


st.title("Evaluate")
tab_card, tab_cmp, tab_methods = st.tabs(["Model card", "Compare models", "Methods"])
classifiers = list_models("classifier")
ds_names = {d["id"]: d["name"] for d in list_datasets()}
with tab_card:
    if not classifiers:
        st.info("No classifier yet: train one on **Data & models** or build the demo with `exemplar demo`.")
    else:
        cur = selected_model()
        model_card(_pick(classifiers, "eval_model", "Model", cur["id"] if cur else None), ds_names)
with tab_cmp:
    compare(classifiers)
with tab_methods:
    methods()
