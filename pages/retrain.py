"""eXBL retraining: the pinned good / bad pair with both maps (a pick from any split but train is refused), the
method and its settings, a matched plain-CE control and a random-pair control (both on by default) and "repeat
with K seeds" (3 by default), Start (a worker job), and live charts of the per-epoch train / val diagnostics (CE,
explanation term, active triplets, d+ / d−, val accuracy, val AR / AP; the control dashed) while it runs. Test
and test_shifted appear once, at the end: parent | plain control | random-pair control | child accuracy per
held-out split (val headed "selection (not evidence)"), the recipe's and the choice's effects, the verdict, and a
link to the report."""
from __future__ import annotations

import streamlit as st

from core.data.roles import heading
from pages.parts.plain import md_escape

from pages.common import refuse_open_bind, current_user, selected_dataset, selected_model
from pages.parts import overlays as ov
from pages.parts.job_progress import live_job
from services.explanations import explaining as ex, feedback as fb
from services.jobs.lifecycle import active_duplicate, get_job, submit
from services.retraining.retrain import DEFAULT_SEEDS
from services.presentation.report_view import WHO, WHO_NAMES, history_figure
from services.retraining.retrain import default_method, method_info
from services.retraining.retrain_pairs import split_refusal

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

@st.cache_data(show_spinner=False)
def _methods() -> tuple[dict, str]:
    return method_info(), default_method()


def refusals(pair: dict) -> list[str]:
    """One-line reasons the pinned pair cannot be used (an exemplar from a held-out split)."""
    return [why for k in ("good", "bad") if pair.get(k) and (why := split_refusal(k, pair[k]))]


PAIR_NA = ("n/a: the map of this exemplar is not stored any more (its explanation run was replaced), or the image "
           "has no mask to score it against")
RESULT_NA = {"plain control": "n/a: no matched control was trained",
             "random-pair control": "n/a: no random-pair control was trained",
             "child − control": "n/a: the effect (child − control, or child − parent without a control) was not "
                                "computed",
             "recipe": "random-pair control − plain control: what the method does with any two train images",
             "your choice": "child − random-pair control: what your two exemplars add to the method"}
RESULT_EFFECTS = {"child − control": "effect", "recipe": "effect_recipe", "your choice": "effect_choice"}


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None or v != v else f"{v:.{nd}f}"


def show_pair(model: dict, dataset: dict, pair: dict) -> None:
    classes = dataset.get("classes") or []
    cols = st.columns(2)
    for col, kind in zip(cols, ("good", "bad")):
        p = pair.get(kind)
        with col:
            st.markdown(f"{'✅' if kind == 'good' else '❌'} **{kind} exemplar**")
            if p is None:
                st.caption(f"No {kind} exemplar pinned: mark one in the **Gallery**.")
                continue
            run = ex.load_run(p["run_id"]) if p.get("run_id") else ex.latest_run(model["id"], "gradcam")
            row = ex.explanation_for(run["id"], p["image_id"]) if run else None
            if row is not None:
                st.image(ov.overlays_for(run, dataset["id"], [row], 0.45, "jet", side=220)[0])
            lab = classes[p["label"]] if p.get("label") is not None and p["label"] < len(classes) else p.get("label")
            lab = "label n/a" if lab is None else md_escape(lab)
            line = (f"{md_escape(p['path'])} · {lab} · AR {_fmt(row['ar'] if row else p.get('ar'), 2)} · "
                    f"AP {_fmt(row['ap'] if row else p.get('ap'), 2)} · WR {_fmt(row['wr'] if row else None, 2)}")
            st.caption(line, help=PAIR_NA if "n/a" in line else None)


def _charts(job: dict) -> None:
    hist = [m for m in (job.get("metrics") or []) if isinstance(m, dict) and "epoch" in m]
    if hist:
        st.plotly_chart(history_figure(hist), key=f"rt_hist_{job['id']}_{len(hist)}", width="stretch")
    if job["status"] == "succeeded" and job.get("result"):
        r = job["result"]
        _result_head(r)
        rows = []
        for s_, row in (r.get("splits") or {}).items():
            cell = {WHO_NAMES[w]: _fmt((row.get(w) or {}).get("accuracy")) for w in WHO}
            rows.append({"held-out split": heading(s_), **cell,
                         **{c: _effect_text((row.get(k) or {}).get("accuracy")) for c, k in RESULT_EFFECTS.items()}})
        if rows:
            st.dataframe(rows, hide_index=True, key=f"rt_result_{job['id']}", column_config={
                c: st.column_config.Column(c, help=why) for c, why in RESULT_NA.items()})
        if st.button("Open the before / after report", key=f"rt_report_{job['id']}"):
            st.session_state["report_pair"] = {"parent": r["parent_id"], "child": r["model_id"]}
            try:
                st.switch_page("pages/report.py")
            except Exception:  # page path differs outside app.py (tests)
                st.info("Open **Report** in the sidebar: the pair is selected.")


def _effect_text(e: dict | None) -> str:
    if not e or e.get("mean") is None:
        return "n/a"
    ci = f" [{e['low']:+.3f}, {e['high']:+.3f}]" if e.get("low") is not None else ""
    return f"{e['mean']:+.3f}{ci}"


def _result_head(r: dict) -> None:
    """Which models the retrain made (every seed's), and the verdict as plain text."""
    sm = r.get("seed_models") or []
    st.success(f"Retrain #{r.get('retrain_id')}: new model #{r['model_id']} ({md_escape(r['name'])}), child of "
               f"#{r['parent_id']}; {len(sm)} seed(s), each a child, a plain control and a random-pair control.")
    if sm:
        st.caption(" · ".join(f"seed {m['seed']}: child #{m['child_id']}, control #{m.get('control_id') or '—'}, "
                              f"random pair #{m.get('random_control_id') or '—'}" for m in sm))
    if r.get("verdict"):
        st.text(r["verdict"])
    if r.get("interval"):
        st.caption(f"Cells are means over every seed's models; 95 % intervals: {md_escape(r['interval'])}. The verdict reads "
                   "test and test_shifted only.")


def main() -> None:
    st.title("eXBL retraining")
    st.caption("Two clicks become a better model: the good map shows where the evidence should be, the bad one "
               "where it should not. Exemplars come from train. The result is judged once, at the end, on "
               "val / test / test_shifted against a matched plain fine-tune (the control).")
    model, dataset, user = selected_model(), selected_dataset(), current_user()
    if model is None or dataset is None:
        st.info("Pick a dataset and a model in the sidebar (train one on **Data & models**).")
        return
    if user is None:
        st.info("Pick or create a user in the sidebar: the pinned pair is per user.")
        return
    pair = fb.current_pair(model["id"], user["id"])
    st.subheader(f"Model #{model['id']} {md_escape(model['name'])}")
    show_pair(model, dataset, pair)
    both = pair["good"] is not None and pair["bad"] is not None

    methods, default = _methods()
    names = list(methods)
    refused = refusals(pair)
    for why in refused:
        st.error(why)
    with st.form("rt_form", border=True):
        c = st.columns([2, 1, 1, 1, 1, 1])
        method = c[0].selectbox("Method", names, index=names.index(default), key="rt_method",
                                format_func=lambda m: f"{m} — {methods[m]['label']}")
        d = methods[method]["defaults"]
        epochs = c[1].number_input("Epochs", 1, 100, 5, key="rt_epochs")
        lam = c[2].number_input("λ", 0.0, 1e4, float(d.get("lam", 1.0)), key=f"rt_lam_{method}", format="%.3g",
                                disabled="lam" not in d)
        margin = c[3].number_input("Margin", 0.0, 4.0, float(d.get("margin", 0.5)), key=f"rt_margin_{method}",
                                   disabled=not methods[method]["triplet"])
        lr = c[4].number_input("Learning rate", 1e-6, 1.0, 1e-3, key="rt_lr", format="%.1e")
        freeze = c[5].number_input("Frozen blocks", 0, 10, 0, key="rt_freeze")
        c2 = st.columns([2, 2, 1, 1])
        control = c2[0].checkbox("Matched plain-CE control", value=True, key="rt_control",
                                 help="Fine-tune a copy of the parent with plain cross-entropy and the same epochs, "
                                      "learning rate, seed, batch order and frozen blocks: the effect of the "
                                      "feedback is child − control.")
        rnd = c2[1].checkbox("Random-pair control", value=True, key="rt_random_control",
                             help="Also run the same method with a pair drawn at random from train (per seed): "
                                  "the recipe = random pair − plain control, your choice = child − random pair.")
        seeds = c2[2].number_input("Repeat with K seeds", 1, 10, DEFAULT_SEEDS, key="rt_seeds",
                                   help="K seeds, each a child and its controls; intervals resample seeds, then "
                                        "images (with 1 seed they cover the test images only)")
        last = c2[3].number_input("Train only the last K stages", 0, 50, 0, key="rt_train_last",
                                  help="0 = every stage; the head is the last stage (any network, imported ones "
                                       "included)")
        start = st.form_submit_button("Start retraining", type="primary", disabled=not both or bool(refused),
                                      key="rt_start")
    if method == "rrr":
        st.caption("rrr uses every image's lung mask: a comparison point, not a two-click method.")
    elif method == "exbl":
        st.caption("exbl (the triplet alone) does no better than its plain fine-tune control on the demo's val "
                   "split; exbl_cf adds counterexamples from the same two clicks (see bench/exbl_effect.py).")
    if not both:
        st.info("Pin one good and one bad explanation in the **Gallery** first.")
    if start and both and not refused:
        params = {"model_id": model["id"], "method": method, "epochs": int(epochs), "lr": float(lr),
                  "freeze_blocks": int(freeze), "train_last": int(last), "control": bool(control),
                  "random_control": bool(rnd), "seeds": int(seeds),
                  "feedback_ids": [pair["good"]["id"], pair["bad"]["id"]]}
        if "lam" in d:
            params["lam"] = float(lam)
        if methods[method]["triplet"]:
            params["margin"] = float(margin)
        dup = active_duplicate("exbl", params)
        if dup is not None:
            st.session_state["rt_job"] = dup
            st.info(f"Job {dup} with this pair and these settings is already queued or running: wait for it, or "
                    "cancel it on **Jobs** first.")
        else:
            jid = submit("exbl", params, user["id"])
            st.session_state["rt_job"] = jid
            st.toast(f"Retraining job {jid} queued")
    jid = st.session_state.get("rt_job")
    if jid and get_job(jid) is not None:
        st.subheader(f"Job {jid}")
        live_job(jid, "rt", chart=False, extra=_charts)


main()
