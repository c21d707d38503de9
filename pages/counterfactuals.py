"""The counterfactual studio: pick an image, model version(s), a target class and methods; run them as a job; see
original | counterfactual | affirmative | adversarial (| GAN) side by side with |Δ| maps, class probabilities before
and after, metrics and the taxonomy badge; step through the diffusion trajectory; compare two model versions
(share of |Δ| in the marker box and in the lungs); rate each result; reopen and export stored results.
"""
from __future__ import annotations


import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages.common import refuse_open_bind, current_user, selected_dataset, selected_model
from pages.parts.captions import edits_sentence
from pages.parts.cf_table import na, render_stored_table, uniform
from pages.parts.cf_view import (badge, class_name, cross_text, fmt, gray_png, masks_rgb, na_help, png, prediction_line,
                                 prob_bars, result_captions, show_delta, trajectory_panel)
from pages.parts.gan_column import render_gan_result, render_gan_trajectory
from pages.parts.job_progress import render_job
from pages.parts.plain import md_escape
from core.registries import COUNTERFACTUAL_METHODS
from services.counterfactuals import runs as cfs
from services.models.catalog import list_models
from services.data.datasets import list_images, resolve_image
from services.counterfactuals.generators import get_generator
from services.jobs.lifecycle import get_job, submit
from services.team.roles import allowed
from pages.parts.viewer import counterfactual_dialog
from services.counterfactuals.realism import realism_table
from services.data.datasets import cache_path, load_arrays
from services.platform.settings import get_settings

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

# each method's column, a diffusion's guided-back (affirmative) example beside it
COLUMN_ORDER = [c for s in COUNTERFACTUAL_METHODS for c in ((s.name, "affirmative") if s.affirmative else (s.name,))]


# ----------------------------------------------------------------------------------------------- data

@st.cache_resource(max_entries=2, show_spinner=False)
def _images(dataset_id: int, stamp: float, home: str) -> np.ndarray:
    return load_arrays(dataset_id).images


def dataset_images(dataset_id: int) -> np.ndarray:
    """The dataset's images at working resolution (its array cache, loaded once per process and file version)."""
    p = cache_path(dataset_id)
    return _images(int(dataset_id), p.stat().st_mtime if p.exists() else 0.0, str(get_settings().home_dir))


# ----------------------------------------------------------------------------------------------- results

def rate_form(row: dict, key: str) -> None:
    with st.popover("Rate", width="stretch"):
        with st.form(f"{key}_form", clear_on_submit=True, border=False):
            realism = st.slider("Realism", 1, 5, 3, key=f"{key}_realism")
            plausible = st.radio("The change is clinically plausible", list(cfs.RATING_PLAUSIBLE), index=2,
                                 horizontal=True, key=f"{key}_plausible")
            comment = st.text_area("Comment", key=f"{key}_comment", max_chars=5000)
            if st.form_submit_button("Save rating"):
                u = current_user()
                if u is None:
                    st.warning("Pick or create a user in the sidebar first: every rating records who made it.")
                else:
                    cfs.annotate(row["id"], u["id"], realism, plausible, comment)
                    st.toast("rating saved")
        anns = cfs.list_annotations(row["id"])
        for a in anns[-5:]:
            st.caption(f"{md_escape(a['user'])}: realism {a['rating']}, plausible {a['plausible']}")
            if a["comment"]:
                st.text(a["comment"])  # plain text, never rendered as markdown or HTML


def result_column(kind: str, row: dict, arrs: dict, classes: list[str], key: str) -> None:
    """One column of the side-by-side row: image, |Δ| map, probability bars, metrics, badge, rating."""
    m = row["metrics"]
    if kind == "affirmative":
        a = m.get("affirmative") or {}
        img, probs, cat = arrs["affirmative"], a.get("probs"), a.get("category")
        st.markdown("**Affirmative**")
        st.image(gray_png(img), caption="guided back to " + classes[m["original_class"]])
        show_delta(arrs["original"], img, arrs.get("marker"), "|Δ| to the original")
        prob_bars(classes, m["probs_before"], probs, key=f"{key}_bars")
        line = (f"p(original) {fmt(a.get('orig_prob'))} · L1 {fmt(a.get('l1_to_original'), 4)} · "
                f"bpd {fmt(a.get('bpd'))}")
        st.caption(line, help=na_help(line))
        badge(cat)
        return
    if kind == "gan":  # the same metrics plus what the search changed, in words
        render_gan_result(row, arrs, classes, key=key)
        rate_form(row, key=f"{key}_rate")
        return
    st.markdown(f"**{cfs.method_label(row['method'], row.get('preset'))}**")
    img = arrs["counterfactual"]
    st.image(gray_png(img), caption=f"#{row['id']} · target {class_name(classes, row['target'])}")
    show_delta(arrs["original"], img, arrs.get("marker"), "|Δ| (marker box outlined)")
    prob_bars(classes, m["probs_before"], m["probs_after"], key=f"{key}_bars")
    st.caption(prediction_line(m, row["target"], classes))
    result_captions(row, passes_text(row))
    st.caption(cross_text(m.get("cross_model") or {}, classes))
    badge(row["category"])
    if st.button("Viewer", key=f"{key}_viewer", icon="🔍", width="stretch",
                 help="original | counterfactual | difference at native size, in a large dialog"):
        counterfactual_dialog(arrs["original"], img, f"{key}_view",
                              {"confounder mask (marker)": arrs["marker"]} if arrs.get("marker") is not None else None)
    rate_form(row, key=f"{key}_rate")


def passes_text(row: dict) -> str:
    """UNet passes of the kept try (guided and all), whether the sample was finished to t = 0, and with several
    tries the passes of every try and the share of tries that flipped."""
    m = row.get("metrics") or {}
    if row["method"] != "diffusion":
        return f"{row['unet_passes']} UNet passes"
    t = m.get("t_final")
    done = "sample finished to t = 0" if t == 0 else ("finished: unknown (older result)" if t is None
                                                     else f"one-step estimate at t = {t}")
    guided = m.get("guided_passes")
    tries = m.get("tries") or 1
    every = (f" · {m['unet_passes_total']} over all {tries} tries, flip rate per try {m['flip_rate_per_try']:.2f}"
             if tries > 1 and m.get("unet_passes_total") is not None and m.get("flip_rate_per_try") is not None
             else "")
    return f"{row['unet_passes']} UNet passes ({'n/a' if guided is None else guided} guided) · {done}{every}"


def side_by_side(rows: list[dict], key: str) -> None:
    """original | counterfactual | affirmative | adversarial (| GAN) for rows of one model, image and target."""
    rows = sorted(rows, key=lambda r: COLUMN_ORDER.index(r["method"]) if r["method"] in COLUMN_ORDER else 99)
    arrs = {r["id"]: cfs.load_arrays_of(r) for r in rows}
    first = rows[0]
    classes = first["metrics"].get("classes") or [str(i) for i in range(len(first["metrics"]["probs_before"]))]
    cols_spec = [("original", first)]
    for r in rows:
        cols_spec.append((r["method"], r))
        if r["method"] == "diffusion" and "affirmative" in arrs[r["id"]]:
            cols_spec.append(("affirmative", r))
    cols = st.columns(len(cols_spec))
    for (kind, r), col in zip(cols_spec, cols):
        with col:
            if kind == "original":
                a = arrs[r["id"]]
                st.markdown("**Original**")
                st.image(gray_png(a["original"]),
                         caption=f"{r.get('image_path', r['image_id'])} · predicted "
                                 f"{classes[r['metrics']['original_class']]}")
                if "lung" in a or "marker" in a:
                    st.image(png(masks_rgb(a["original"], a.get("lung"), a.get("marker"))),
                             caption="lungs (blue) · marker (yellow)")
                prob_bars(classes, r["metrics"]["probs_before"], None, key=f"{key}_orig_bars")
                line = f"bpd {fmt(r['metrics'].get('bpd_original'))} · ε {fmt(r['metrics'].get('bpd_eps'))}"
                st.caption(line, help=na_help(line))
            else:
                result_column(kind, r, arrs[r["id"]], classes, key=f"{key}_{kind}_{r['id']}")
    traj_rows = [r for r in rows if "trajectory" in arrs[r["id"]]]
    for r in traj_rows:
        if r["method"] == "gan":
            render_gan_trajectory(r, arrs[r["id"]], key=f"{key}_traj_{r['id']}")
        else:
            trajectory_view(r, arrs[r["id"]], key=f"{key}_traj_{r['id']}")


def trajectory_view(row: dict, arrs: dict, key: str) -> None:
    trajectory_panel(f"**Trajectory** of #{row['id']}: the one-step estimate x̂₀ while denoising (an estimate, not the "
                     "sample; frames after the guidance stopped show the finished sample), and p(target)", arrs,
                     key, "t = {}", "x̂₀ estimate at t = {}", "timestep t (denoising runs right to left)",
                     reverse_x=True)


def show_job_results(job_id: int, key: str) -> None:
    rows = cfs.list_counterfactuals(job_id=job_id)
    if not rows:
        return
    by_model: dict[int, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model_id"], []).append(r)
    if len(by_model) > 1:
        compare_table(rows)
    for mid, rs in by_model.items():
        st.markdown(f"#### Model #{mid} · {md_escape(rs[0]['model_name'])}")
        side_by_side(rs, key=f"{key}_m{mid}")


def compare_table(rows: list[dict]) -> None:
    st.markdown("**Where the edits go**: share of Σ|Δ| inside the marker box and inside the lungs")
    table = [{"model": f"#{r['model_id']} {r['model_name']}", "method": r["method"], "flipped": na(bool(r["flipped"])),
              "p(target)": na(r["target_prob"], 3), "L1": na(r["l1"], 4),
              "|Δ| in marker box": na(r["metrics"].get("marker_share")),
              "|Δ| in lungs": na(r["metrics"].get("lung_share")), "category": na(r["category"])} for r in rows]
    st.dataframe(uniform(table), key="cf_compare_table", hide_index=True, column_config={
        c: st.column_config.Column(c, help="n/a: the image has no marker / lung mask") for c in
        ("|Δ| in marker box", "|Δ| in lungs")})
    st.caption(edits_sentence(rows))  # computed from the table (issue 16)


def live(job_id: int, key: str) -> None:
    """Poll the job; when it ends, rerun the page once so the results render."""

    @st.fragment(run_every=1.5)
    def _poll() -> None:
        job = get_job(job_id)
        if job is None:
            return
        render_job(job, key, chart=False)
        if job["status"] in ("succeeded", "failed", "cancelled", "lost"):
            seen = st.session_state.setdefault("cf_seen_final", [])
            if job_id not in seen:
                seen.append(job_id)
                st.rerun(scope="app")

    _poll()


# ----------------------------------------------------------------------------------------------- inputs

def pick_image(ds: dict) -> dict | None:
    qp = st.query_params.get("image")
    if qp and st.session_state.get("cf_qp_used") != qp:
        try:
            im = resolve_image(ds["id"], qp)
            st.session_state["cf_image_id"] = im["id"]
        except ValueError as exc:
            st.warning(md_escape(f"The linked image does not belong to {ds['name']}: {exc}"))  # URL text: plain
        st.session_state["cf_qp_used"] = qp
    c1, c2, c3 = st.columns([1, 1, 2])
    split = c1.selectbox("Split", ["test", "test_shifted", "val", "train"], key="cf_split")
    klass = c2.selectbox("Class", ["any"] + list(ds["classes"]), key="cf_class")
    imgs = [im for im in list_images(ds["id"], split) if klass == "any" or im["class"] == klass][:500]
    chosen = st.session_state.get("cf_image_id")
    if chosen is not None and all(im["id"] != chosen for im in imgs):
        try:
            imgs = [resolve_image(ds["id"], chosen)] + imgs
        except ValueError:
            chosen = None
    if not imgs:
        st.info("No image in this split and class.")
        return None
    ids = [im["id"] for im in imgs]
    idx = ids.index(chosen) if chosen in ids else 0
    pick = c3.selectbox("Image", ids, index=idx, key="cf_image_pick",
                        format_func=lambda i: next(f"#{im['id']} {im['path']} ({im['class']})" for im in imgs
                                                   if im["id"] == i))
    st.session_state["cf_image_id"] = pick
    return next(im for im in imgs if im["id"] == pick)


def available_methods(ds: dict) -> dict[str, str | None]:
    """method → None when usable, else why not."""
    out = {}
    for m, kind in cfs.METHODS.items():
        if kind is None or get_generator(ds["id"], kind) is not None:
            out[m] = None
        else:
            out[m] = f"needs a {kind} generator: `exemplar gen train --dataset {ds['name']} --kind {kind}`"
    return out


def advanced_options() -> dict:
    with st.expander("Advanced (override the preset)"):
        c = st.columns(4)
        steps = c[0].number_input("diffusion steps", 0, 1000, 0, key="cf_opt_steps", help="0 = the preset's")
        t_start = c[1].number_input("start timestep t₀", 0, 999, 0, key="cf_opt_t0", help="0 = the preset's")
        eta = c[2].number_input("η (step scale)", 0.0, 50.0, 0.0, key="cf_opt_eta", help="0 = the preset's")
        adv = c[3].number_input("adversarial max steps", 0, 2000, 0, key="cf_opt_adv", help="0 = default")
    d = {k: v for k, v in (("steps", int(steps)), ("t_start", int(t_start)), ("eta", float(eta))) if v}
    return {"diffusion": d, "adversarial": {"max_steps": int(adv)} if adv else {}}


def run_form(ds: dict, image: dict, model_ids: list[int], key: str, methods_default: list[str]) -> None:
    avail = available_methods(ds)
    usable = [m for m, why in avail.items() if why is None]
    for m, why in avail.items():
        if why:
            st.caption(f"{cfs.METHOD_LABELS.get(m, m)}: {why}")
    c1, c2 = st.columns([1, 3])  # the methods' full names fit ("Diffusion gui…" was cut in a sixth of the row)
    c3, c4, c5 = st.columns([2, 1, 1])
    classes = list(ds["classes"])
    default_t = next((i for i, c in enumerate(classes) if c != image["class"]), 0)
    target = c1.selectbox("Target class", classes, index=default_t, key=f"{key}_target")
    methods = c2.multiselect("Methods", usable, default=[m for m in methods_default if m in usable],
                             format_func=lambda m: cfs.METHOD_LABELS.get(m, m), key=f"{key}_methods")
    preset = c3.radio("Preset", list(cfs.PRESETS), key=f"{key}_preset", horizontal=True, help="fast: from the noised input, ≤ 60 "
                      "guided passes, early stop · xaidiff: the published defaults from pure noise (slow on CPU)")
    affirm = c4.checkbox("Affirmative", value=True, key=f"{key}_affirm")
    n_seeds = c5.number_input("Seeds", 1, 8, 1, key=f"{key}_seeds")
    opts = advanced_options() if key == "cf_gen" else {}
    u = current_user()
    if st.button("Generate", type="primary", key=f"{key}_run", disabled=not methods or u is None):
        params = {"model_ids": model_ids, "image": image["id"], "target": target, "methods": methods,
                  "preset": preset, "affirmative": bool(affirm), "n_seeds": int(n_seeds),
                  "options": opts or st.session_state.get("cf_gen_opts", {})}
        st.session_state[f"{key}_job"] = submit("counterfactual", params, u["id"])
        st.rerun()
    if u is None:
        st.caption("Pick a user in the sidebar to run: every result records who made it.")
    if key == "cf_gen":
        st.session_state["cf_gen_opts"] = opts


def job_area(key: str) -> None:
    jid = st.session_state.get(f"{key}_job")
    if jid is None:
        return
    job = get_job(jid)
    if job is None:
        return
    if job["status"] in ("queued", "running"):
        live(jid, key)
    else:
        render_job(job, key, chart=False)
        if job["status"] == "succeeded":
            show_job_results(jid, key)


# ----------------------------------------------------------------------------------------------- tabs

def tab_generate(ds: dict, model: dict) -> None:
    image = pick_image(ds)
    if image is None:
        return
    c1, c2 = st.columns([1, 4])
    c1.image(gray_png(dataset_images(ds["id"])[image["index"]]), caption=f"{image['path']} · label {image['class']}")
    with c2:
        st.markdown(f"Model **#{model['id']} {md_escape(model['name'])}** (change it in the sidebar)")
        run_form(ds, image, [model["id"]], "cf_gen", COUNTERFACTUAL_METHODS.names(preselected=True))
    job_area("cf_gen")


def tab_compare(ds: dict, model: dict) -> None:
    models = list_models("classifier", ds["id"])
    if len(models) < 2:
        st.info("Comparing needs two model versions of this dataset (for example the baseline and its eXBL "
                "retrain).")
        return
    labels = {m["id"]: f"#{m['id']} {m['name']}" for m in models}
    ids = list(labels)
    c1, c2 = st.columns(2)
    a = c1.selectbox("Model A", ids, index=0, format_func=labels.get, key="cf_cmp_a")
    b_default = next((i for i, m in enumerate(models) if m.get("parent_id") == a), len(ids) - 1)
    b = c2.selectbox("Model B", ids, index=b_default, format_func=labels.get, key="cf_cmp_b")
    if a == b:
        st.warning("Pick two different model versions.")
        return
    image = next((im for im in [st.session_state.get("cf_image_id")] if im), None)
    if image is None:
        st.info("Pick an image on the Generate tab first.")
        return
    im = resolve_image(ds["id"], image)
    st.caption(f"Image {md_escape(im['path'])} ({im['class']}): the table under the results says where each model version's "
               "counterfactuals edit (marker box or lungs).")
    run_form(ds, im, [a, b], "cf_cmp", ["diffusion"])
    job_area("cf_cmp")


def tab_stored(ds: dict) -> None:
    rows = cfs.list_counterfactuals(dataset_id=ds["id"], limit=500)
    if not rows:
        st.info("No stored counterfactuals for this dataset yet.")
        return
    every = rows
    rows = render_stored_table(every)  # identical re-runs folded into one row; n/a for missing values
    realism_panel(rows)
    c1, c2 = st.columns([1, 1])
    pick = c1.selectbox("Reopen", [r["id"] for r in rows], key="cf_reopen",
                        format_func=lambda i: next(f"#{r['id']} {r['method']} · {r['image_path']}" for r in rows
                                                   if r["id"] == i))
    with c2:
        u = current_user()  # the export is audited under the signed-in user; the service checks the role again
        if u is None or not allowed(u["role"], "export"):
            st.caption("Exporting needs a researcher or an admin" + (f" (you are a {u['role']})." if u else
                                                                     ": pick or sign in a user first."))
        else:
            sel = st.multiselect("Export (empty = all shown)", [r["id"] for r in rows], key="cf_export_ids")
            st.download_button("Export zip", data=lambda: cfs.export_zip(sel or [r["id"] for r in rows],
                                                                         user_id=u["id"]),
                               file_name="counterfactuals.zip", mime="application/zip", key="cf_export")
    row = next(r for r in rows if r["id"] == pick)
    same = [r for r in every if r["job_id"] == row["job_id"] and r["model_id"] == row["model_id"]
            and row["job_id"] is not None] or [row]
    side_by_side(same, key=f"cf_stored_{pick}")


def realism_panel(rows: list[dict]) -> None:
    """Realism of the stored results per (model, method, preset, target): FD / KID / sharpness vs real images."""
    with st.expander("Realism of these results (FD / KID / sharpness vs real held-out images)"):
        if not st.toggle("Compute", key="cf_realism_on", help="features of the independent classifier"):
            st.caption("Bits/dim favours smooth images; these figures do not. Switch on to compute them.")
            return
        table, why = realism_table(rows)
        if not table:
            st.caption(f"Not available: {why}.")
            return
        st.dataframe(uniform([{"model": f"#{r.model_id}", "method": cfs.method_label(r.method, r.preset),
                       "target": r.target, "n": r.n, "real n": r.n_real, "FD": round(r.fd, 3),
                       "KID": round(r.kid, 4), "sharpness": round(r.sharpness, 2),
                       "B flips": na(r.cross_flip, 2)} for r in table]),
                     key="cf_realism_table", hide_index=True)
        st.caption(f"Features: independent classifier #{table[0].feature_model_id} (another architecture, same data). "
                   "FD and KID are biased upwards for small sets: compare groups of similar size. Sharpness = "
                   "high-frequency energy over that of the real images (1: as sharp).")


def ddpm_card(gen: dict) -> None:
    """The DDPM's provenance: samples, loss curve, training steps, command."""
    import json
    from pathlib import Path

    folder = Path(gen["checkpoint"])
    prov_path = folder / "provenance.json"
    if not prov_path.is_file():
        return
    prov = json.loads(prov_path.read_text())
    with st.expander("About the DDPM (samples, training, provenance)"):
        c1, c2 = st.columns([3, 2])
        if (folder / "samples.png").is_file():
            c1.image(str(folder / "samples.png"), caption="unconditional samples (strided DDPM, 50 steps)")
        with c2:
            line = (f"{na(prov.get('training_steps'))} training steps on {na(prov.get('train_images'))} images of "
                    f"{md_escape(na(prov.get('dataset')))} · final loss {fmt(prov.get('final_loss'), 4)} · "
                    f"{(prov.get('weights_bytes') or 0) / 1e6:.1f} MB · {md_escape(na(prov.get('device')))}")
            st.caption(line, help="n/a: not recorded in this DDPM's provenance.json" if "n/a" in line else None)
            st.code(prov.get("command") or "", language="bash")
            curve = prov.get("loss_curve") or []
            if curve:
                fig = go.Figure(go.Scatter(y=curve, mode="lines"))
                fig.update_layout(height=160, margin=dict(l=0, r=0, t=4, b=0), yaxis_type="log",
                                  yaxis_title="loss", xaxis_title="× 10 steps")
                st.plotly_chart(fig, key="cf_ddpm_loss", width="stretch")


# ----------------------------------------------------------------------------------------------- page

st.title("Counterfactual studio")
st.caption("What would have to change in this image for the model to say otherwise? Diffusion counterfactuals "
           "stay on the data distribution (bits/dim ≤ ε); adversarial examples do not.")
ds = selected_dataset()
model = selected_model()
if ds is None:
    st.info("No dataset yet: build the demo with `exemplar demo` or import one on **Data & models**.")
elif model is None:
    st.info("No classifier for this dataset yet: train one on **Data & models**.")
else:
    gen = get_generator(ds["id"], "ddpm")
    if gen is not None:
        b = (gen["metrics"] or {}).get("bpd") or {}
        st.caption(f"Fidelity model: DDPM #{gen['id']} {md_escape(gen['name'])} · ε = {fmt(b.get('eps'))} bits/dim "
                   f"({b.get('estimator') or 'not computed yet'}, 95th percentile of {na(b.get('n'))} held-out images)",
                   help=None if b.get("eps") is not None else "n/a: bits/dim not computed yet for this DDPM")
        ddpm_card(gen)
    t1, t2, t3 = st.tabs(["Generate", "Compare model versions", "Stored results"])
    with t1:
        tab_generate(ds, model)
    with t2:
        tab_compare(ds, model)
    with t3:
        tab_stored(ds)
