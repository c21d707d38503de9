"""Evaluate → Methods: AR, AP, POS, NEG, DEL, INS and seconds per image per explanation method and per model
version (stored by the `evaluate` job on each classifier's row), the DEL / INS / POS / NEG perturbation curves,
and a form that queues `evaluate` (and, for LTX, `ltx.train`) jobs on the worker."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.registries import METRICS
from services.presentation.palette import colour_map, version_colours
from pages.common import require_user, selected_model
from pages.parts.job_progress import live_job
from services.jobs import lifecycle as jobs
from services.models.catalog import list_models
from services.explanations.evaluation import DEFAULT_METHODS, LABELS, known_methods
from services.explanations.ltx import LTX_METHODS, find_explainer, masking_of

SCORED = METRICS.specs(groups="evaluation")  # what the `evaluate` job stores (services.explanations.evaluation)
METRIC_LABELS = {**{m.name: m.label for m in SCORED}, "seconds_per_image": "s / image"}
BETTER = {**{m.name: "↑" if m.higher_is_better else "↓" for m in SCORED}, "seconds_per_image": "↓"}
CURVE_HELP = {m.name: f"{m.label}: {m.help}" for m in SCORED if m.kind == "faithfulness"}
TARGETS = {"predicted": "predicted class", "true": "true class"}


def _mlabel(m: dict) -> str:
    return f"#{m['id']} {m['name']}"


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _stored(m: dict) -> dict:
    return ((m.get("metrics") or {}).get("methods") or {})


def results_frame(models: list[dict], target: str = "predicted") -> pd.DataFrame:
    """One row per (model, method) with a stored evaluation: the metrics for the predicted or the true class."""
    rows = []
    for m in models:
        for name, r in _stored(m).items():
            vals = r if target == "predicted" else (r.get("true") or {})
            if not vals:
                continue
            rows.append({"model": _mlabel(m), "method": r.get("label") or _label(name),
                         **{METRIC_LABELS[m.name]: vals.get(m.name) for m in SCORED},
                         "s / image": r.get("seconds_per_image"), "images": r.get("n"), "split": r.get("split"),
                         "evaluated": (r.get("evaluated_at") or "")[:19].replace("T", " ")})
    cols = ["model", "method", *[METRIC_LABELS[k] for k in BETTER], "images", "split", "evaluated"]
    return pd.DataFrame(rows, columns=cols)


def curves_frame(models: list[dict], target: str = "predicted") -> pd.DataFrame:
    """Long frame of the mean perturbation curves: model, method, curve (DEL/INS/POS/NEG), removed, value."""
    rows = []
    for m in models:
        for name, r in _stored(m).items():
            fr = r.get("fractions") or []
            for k, ys in ((r.get("curves") or {}).get(target) or {}).items():
                for p, y in zip(fr, ys):
                    rows.append({"model": _mlabel(m), "method": r.get("label") or _label(name),
                                 "curve": METRIC_LABELS.get(k, k), "removed": p, "value": y})
    return pd.DataFrame(rows, columns=["model", "method", "curve", "removed", "value"])


def wrap_label(text: str, width: int = 11) -> str:
    """A tick label on lines of at most ~width characters (<br> at spaces): five methods under a quarter-width
    facet no longer overlap."""
    lines, cur = [], ""
    for word in str(text).split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return "<br>".join([*lines, cur])


def bars_figure(df: pd.DataFrame):
    df = df.assign(method=df["method"].map(wrap_label))
    long = df.melt(id_vars=["model", "method"], value_vars=[METRIC_LABELS[k] for k in BETTER], var_name="metric",
                   value_name="value").dropna(subset=["value"])
    inv = {v: k for k, v in METRIC_LABELS.items()}
    long["metric"] = long["metric"].map(lambda c: f"{c} {BETTER[inv[c]]}")
    fig = px.bar(long, x="method", y="value", color="model", barmode="group", facet_col="metric",
                 facet_col_wrap=4, facet_row_spacing=0.18, height=560,
                 color_discrete_map=version_colours(df["model"]))
    fig.update_yaxes(matches=None, showticklabels=True, title_text="")
    fig.update_yaxes(title_text="score", col=1)
    fig.update_xaxes(title_text="", tickangle=0, tickfont=dict(size=11))
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(margin=dict(l=0, r=0, t=40, b=0), legend_title_text="model version",
                      legend=dict(orientation="h", yanchor="bottom", y=-0.3, x=0))
    return fig


def curves_figure(cf: pd.DataFrame):
    fig = px.line(cf, x="removed", y="value", color="method", line_dash="model", facet_col="curve",
                  facet_col_wrap=2, markers=True, height=600, facet_row_spacing=0.16,
                  category_orders={"curve": [METRIC_LABELS[k] for k in CURVE_HELP]},
                  color_discrete_map=colour_map(cf["method"].unique()))
    fig.update_yaxes(range=[0, 1.02], title_text="")
    fig.update_yaxes(title_text="probability / accuracy", col=1)
    fig.update_xaxes(title_text="")
    fig.update_xaxes(title_text="share of pixels blanked (0–1)", row=1)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(margin=dict(l=0, r=0, t=40, b=0), legend=dict(orientation="h", yanchor="bottom", y=-0.22, x=0),
                      legend_title_text="method · model version")
    return fig


def _default_models(classifiers: list[dict]) -> list[int]:
    """The sidebar's model and its parent (the model version it was retrained from), else the newest."""
    cur = selected_model()
    ids = [m["id"] for m in classifiers]
    first = cur["id"] if cur and cur["id"] in ids else ids[-1]
    parent = next((m.get("parent_id") for m in classifiers if m["id"] == first), None)
    return [i for i in (parent, first) if i in ids]


def _evaluate_form(picked: list[dict]) -> None:
    names = known_methods()
    with st.expander("Evaluate methods", expanded=not any(_stored(m) for m in picked)):
        c = st.columns([3, 1, 1, 1])
        methods = c[0].multiselect("Methods", names, default=[m for m in DEFAULT_METHODS if m in names],
                                   format_func=_label, key="methods_pick")
        limit = c[1].number_input("Test images (0 = all)", 0, 100000, 100, key="methods_limit",
                                  help="the first N images of the test split; LTX finetunes every image")
        steps = c[2].number_input("LTX finetune steps", 0, 500, 25, key="methods_steps")
        target = c[3].selectbox("Classes", ["both", "predicted"], key="methods_targets",
                                help="explain the predicted class, or the predicted and the true class")
        maskings = list(dict.fromkeys(masking_of(m) for m in methods if m in LTX_METHODS))
        missing = [(m, mk) for m in picked for mk in maskings if find_explainer(m["id"], mk) is None]
        if missing:
            st.warning("No LTX explainer yet for " + ", ".join(f"{_mlabel(m)} ({mk} masks)" for m, mk in missing)
                       + ": pretrain one first (an `ltx.train` job), or leave the LTX methods out.")
            if st.button("Pretrain LTX explainer", key="methods_ltx_train"):
                user = require_user()
                if user is not None:
                    st.session_state["methods_jobs"] = [
                        jobs.submit("ltx.train", {"model_id": m["id"], "masking": mk}, user["id"]) for m, mk in missing]
                    st.rerun()
        go = st.button("Evaluate", type="primary", key="methods_go",
                       disabled=not methods or bool(missing) or not picked)
        st.caption(f"Runs as a worker job per model; results are stored on the model and shown below. "
                   f"Command line: `exemplar evaluate --model ID --methods {','.join(methods) or 'gradcam'}`.")
    if go:
        user = require_user()
        if user is None:
            return
        params = {"methods": list(methods), "split": "test", "limit": int(limit) or None,
                  "targets": ["predicted", "true"] if target == "both" else ["predicted"],
                  "finetune_steps": int(steps)}
        st.session_state["methods_jobs"] = [jobs.submit("evaluate", {"model_id": m["id"], **params}, user["id"])
                                            for m in picked]
        st.rerun()


def _jobs() -> None:
    ids = [int(j) for j in st.session_state.get("methods_jobs") or [] if jobs.get_job(int(j)) is not None]
    for jid in ids:
        live_job(jid, key=f"methods_job_{jid}", chart=False, extra=_rerun_when_done)


def _rerun_when_done(job: dict) -> None:
    """Rerun the whole page once a job succeeds, so the table and charts show the new results."""
    seen = st.session_state.setdefault("methods_seen", [])
    if job["status"] in jobs.FINAL and job["id"] not in seen:
        seen.append(job["id"])
        if job["status"] == "succeeded":
            st.rerun(scope="app")


def render() -> None:
    """The Methods tab of the Evaluate page."""
    classifiers = list_models("classifier")
    if not classifiers:
        st.info("No classifier yet: train one on **Data & models** or build the demo with `exemplar demo`.")
        return
    by_id = {m["id"]: m for m in classifiers}
    ids = st.multiselect("Model versions", list(by_id), default=_default_models(classifiers),
                         format_func=lambda i: _mlabel(by_id[i]), key="methods_models")
    picked = [by_id[i] for i in ids]
    if not picked:
        st.info("Pick one or more classifiers to compare their explanation methods.")
        return
    _evaluate_form(picked)
    _jobs()
    target = st.segmented_control("Explained class", list(TARGETS), default="predicted", format_func=TARGETS.get,
                                  key="methods_target") or "predicted"
    df = results_frame(picked, target)
    if df.empty:
        st.info("No method comparison is stored for " + ", ".join(_mlabel(m) for m in picked)
                + f" ({TARGETS[target]}). Open **Evaluate methods** above, pick methods and press **Evaluate** "
                  "(a worker must be running), or run `exemplar evaluate --model ID --methods gradcam,ig,ltx`.")
        return
    st.markdown(f"##### Methods · {TARGETS[target]}")
    st.caption("AR / AP: the map thresholded at τ against the lung mask. POS / NEG / DEL / INS: AUC × 100 (max 90) "
               "while the top (POS, DEL) or bottom (NEG, INS) 0–90 % of pixels by the map are blanked to the image's "
               "background; POS / NEG read accuracy, DEL / INS the target-class probability. ↑ higher is better, "
               "↓ lower is better. s / image: time to make the maps (predicted class).")
    num = [METRIC_LABELS[k] for k in BETTER]
    in_unit = METRICS.names(groups="evaluation", kind="localisation")  # AR, AP in [0, 1]: 3 decimals
    st.dataframe(df, hide_index=True, width="stretch", key=f"methods_table_{target}",
                 column_config={c: st.column_config.NumberColumn(f"{c} {BETTER[k]}", format="%.4f" if k ==
                                                                 "seconds_per_image" else "%.3f" if k in in_unit
                                                                 else "%.1f")
                                for k, c in METRIC_LABELS.items() if c in num})
    st.plotly_chart(bars_figure(df), key=f"methods_bars_{target}", width="stretch")
    cf = curves_frame(picked, target)
    if not cf.empty:
        st.markdown("##### Perturbation curves")
        st.caption(" · ".join(CURVE_HELP.values()))
        st.plotly_chart(curves_figure(cf), key=f"methods_curves_{target}", width="stretch")
