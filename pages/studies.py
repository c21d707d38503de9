"""Studies (researchers, admins): create a blinded reading study, see agreement (κ, α, readers vs metrics, with
95 % intervals), adjudicate disagreements into a consensus, use the consensus pair for a retrain, export."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import refuse_open_bind, require_user, selected_model
from pages.parts.plain import md_escape
from services.explanations import feedback
from services.reading import studies, results as study_results
from services.team.roles import PermissionRefused
from services.team.users import list_users
from services.counterfactuals.runs import list_counterfactuals
from services.explanations.explaining import list_runs
from services.jobs.lifecycle import submit

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

st.title("Studies")
me = require_user()
DEFAULT_Q = "The map highlights the region that justifies the label | ordinal:1-5"


def _questions(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        if line.strip():
            q, sep, scale = line.rpartition("|")
            if not sep:
                raise ValueError(f"question line {line.strip()!r}: write 'text | nominal:a,b' or 'text | ordinal:1-5'")
            out.append((q.strip(), scale.strip()))
    return out


def _create() -> None:
    model = selected_model()
    src = st.radio("Items", ["explanation maps of a run", "counterfactual pairs"], key="stu_src", horizontal=True)
    kw: dict = {}
    if src.startswith("explanation"):
        runs = list_runs(model["id"]) if model else []
        if not runs:
            st.info("No explanation run for the model picked in the sidebar: explain it on the Gallery first.")
            return
        rid = st.selectbox("Run", [r["id"] for r in runs], key="stu_run",
                           format_func=lambda i: next(f"run {r['id']} · {r['method']} · {r['created_at'][:16]}"
                                                      for r in runs if r["id"] == i))
        c1, c2 = st.columns(2)
        n = c1.number_input("Items", 1, 500, 20, key="stu_n")
        by = c2.selectbox("Sample", ["ar", "class", "split", "random"], key="stu_by",
                          format_func={"ar": "stratified by AR", "class": "by class", "split": "by split",
                                       "random": "at random"}.get)
        picked = st.text_input("…or hand-picked image ids (comma-separated)", key="stu_images")
        kw = {"run_id": int(rid), "n": int(n), "stratify": by,
              "image_ids": [int(x) for x in picked.split(",") if x.strip().isdigit()] or None}
    else:
        methods = sorted({r["method"] for r in list_counterfactuals(model_id=model["id"], limit=10000)}) if model else []
        if len(methods) < 2:
            st.info("Pairs need counterfactuals of two methods for the same images (model picked in the sidebar).")
            return
        c1, c2, c3 = st.columns(3)
        ma = c1.selectbox("Method A", methods, key="stu_ma")
        mb = c2.selectbox("Method B", [m for m in methods if m != ma], key="stu_mb")
        n = c3.number_input("Pairs at most", 1, 500, 20, key="stu_pairs_n")
        kw = {"pairs": studies.auto_pairs(model["id"], ma, mb, int(n))}
        st.caption(f"{len(kw['pairs'])} images have both; readers see the two in an order drawn per reader")
    qtext = st.text_area("Questions, one per line: text | scale", DEFAULT_Q, key="stu_questions")
    readers = st.multiselect("Readers", [u["name"] for u in list_users()], key="stu_readers")
    name = st.text_input("Study name", key="stu_name")
    if st.button("Create study", key="stu_create", type="primary", disabled=not readers):
        try:
            res = studies.create_study(me["id"], _questions(qtext), readers, name=name, **kw)
            st.success(f"study {res['study_id']} created with {len(res['items'])} items")
            if kw.get("run_id"):  # POS/NEG/DEL/INS per item run in the worker

                submit("study.metrics", {"study_id": res["study_id"]}, me["id"])
        except (ValueError, PermissionRefused) as exc:
            st.error(str(exc))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _estimate_rows(ag: dict) -> pd.DataFrame:
    rows = study_results.agreement_rows(ag)
    return pd.DataFrame([{"statistic": study_results.statistic_words(r["statistic"]), "readers": r["readers"],
                          "value": r["value"],
                          "95 % low": r["low"], "95 % high": r["high"], "n": r["n"]} for r in rows])


def _agreement(study: dict) -> None:
    qs = study["questions"]
    qid = st.selectbox("Question", [q["id"] for q in qs], key="stu_ag_q",
                       format_func=lambda i: next(q["text"] for q in qs if q["id"] == i))
    ag = study_results.agreement(me["id"], study["study_id"], qid)
    st.caption(f"{ag['n_answers']} answers by {len(ag['readers'])} readers over {ag['n_units']} items · "
               f"{ag['scale']} scale" + (" (Cohen's κ with quadratic weights)" if ag["scale"] == "ordinal" else ""))
    for label, key in (("Krippendorff's α", "krippendorff_alpha"), ("Fleiss' κ", "fleiss_kappa")):
        st.text(f"{label} = {_fmt(ag[key]['value'])} (95 % interval {_fmt(ag[key]['low'])} to {_fmt(ag[key]['high'])})")
    st.dataframe(_estimate_rows(ag), hide_index=True, key="stu_ag_table", width="stretch")
    if ag["most_disagreement"]:
        st.subheader("Most disagreement")
        st.dataframe(pd.DataFrame([{"item": d["item"], "side": d["side"], "disagreement": d["disagreement"],
                                    **{f"reader {k}": v for k, v in d["answers"].items()}}
                                   for d in ag["most_disagreement"]]), hide_index=True, key="stu_ag_dis")
    st.session_state["stu_last_agreement"] = ag


def _adjudicate(study: dict) -> None:
    rows = study_results.answer_rows(me["id"], study["study_id"])
    qs = study["questions"]
    qid = st.selectbox("Question", [q["id"] for q in qs], key="stu_adj_q",
                       format_func=lambda i: next(q["text"] for q in qs if q["id"] == i))
    q = next(x for x in qs if x["id"] == qid)
    table = pd.DataFrame([r for r in rows if r["question_id"] == qid])
    if table.empty:
        st.info("No answers yet.")
        return
    table["who"] = table.apply(lambda r: "consensus" if r["consensus"] else r["reader"], axis=1)
    wide = table.pivot_table(index=["item", "item_id", "side"], columns="who", values="value", aggfunc="last")
    st.dataframe(wide.reset_index(), hide_index=True, key="stu_adj_table", width="stretch")
    items = sorted(table["item_id"].unique().tolist())
    c1, c2, c3 = st.columns(3)
    item = c1.selectbox("Item id", items, key="stu_adj_item")
    sides = sorted(table[table["item_id"] == item]["side"].unique().tolist())
    side = c2.selectbox("Side", sides, key="stu_adj_side") if sides != [""] else ""
    value = c3.selectbox("Consensus", q["levels"], key="stu_adj_value")
    note = st.text_input("Note", key="stu_adj_note")
    if st.button("Record consensus", key="stu_adj_save"):
        try:
            studies.adjudicate(me["id"], study["study_id"], int(item), value, qid, side, note)
            st.rerun()
        except (ValueError, PermissionRefused) as exc:
            st.error(str(exc))
    if study["kind"] == "map" and {"good", "bad"} <= set(q["levels"]):
        _retrain_pair(study, qid)


def _retrain_pair(study: dict, qid: int) -> None:
    pair = studies.consensus_pair(me["id"], study["study_id"], qid)
    st.text(f"Consensus pair: good image {pair['good']}, bad image {pair['bad']} (model {pair['model_id']})")
    if st.button("Use as my exemplar pair for a retrain", key="stu_use_pair",
                 disabled=pair["good"] is None or pair["bad"] is None):
        made = []
        try:
            for kind in ("good", "bad"):
                made.append(feedback.pick(me["id"], pair["model_id"], pair[kind], kind, run_id=pair["run_id"]))
        except ValueError as exc:  # e.g. a consensus image from a held-out split: refused with the reason
            for p in made:  # both or neither: the good pick is taken back when the bad one is refused
                feedback.undo(me["id"], pair["model_id"], p["id"])
            st.error(md_escape(str(exc)))  # names an image file: plain text
            return
        st.success("Picked: open Retrain with this model to start it.")


def _export(study: dict) -> None:
    sid = study["study_id"]
    c = st.columns(4)
    for i, (what, fmt) in enumerate([("answers", "csv"), ("answers", "json"), ("agreement", "csv"), ("agreement", "json")]):
        c[i].download_button(f"{what} · {fmt.upper()}", key=f"stu_exp_{what}_{fmt}", file_name=f"study{sid}_{what}.{fmt}",
                             data=lambda w=what, f=fmt: study_results.export(me["id"], sid, w, f),
                             mime="text/csv" if fmt == "csv" else "application/json")


if me is not None:
    try:
        all_studies = studies.list_studies(me["id"])
    except PermissionRefused as exc:
        st.warning(str(exc))
    else:
        labels = {s["study_id"]: f"Study {s['study_id']}: {s['name']} · {s['items']} items · "
                                 f"readers {', '.join(s['readers'])}" for s in all_studies}
        sid = st.selectbox("Study", list(labels), format_func=labels.get, key="stu_study") if labels else None
        tabs = st.tabs(["Create", "Agreement", "Adjudicate", "Export"])
        with tabs[0]:
            _create()
        if sid is None:
            for t in tabs[1:]:
                t.info("No study yet.")
        else:
            study = next(s for s in all_studies if s["study_id"] == sid)
            with tabs[1]:
                _agreement(study)
            with tabs[2]:
                _adjudicate(study)
            with tabs[3]:
                _export(study)
