"""The GAN (GCI) column of the counterfactual studio: the result under the same metrics as diffusion (validity,
closeness, bits/dim under the dataset's DDPM, category) plus what the search changed, in words.

render_gan_result(cf_row) draws the whole column from a stored `counterfactuals` row (arrays loaded here when not
given); render_gan_attributes(cf_row) only the attribute-change block, for a page that draws the common part
itself; render_gan_trajectory(cf_row) the search trajectory (p(target) per Adam step and G(I; A') snapshots).
"""
from __future__ import annotations

import streamlit as st

from pages.parts.cf_view import (badge, class_name, cross_text, gray_png, prediction_line, prob_bars, result_captions,
                                 show_delta, trajectory_panel)
from core.registries import attribute_words
from pages.parts.plain import md_escape
from services.counterfactuals import runs as cfs


def attribute_lines(cf_row: dict) -> list[str]:
    """The attribute changes of a stored GAN result, in words (empty when nothing changed). New results store the
    class attribute as the generator's input (core.registries.ATTRIBUTE_WORDS); rows stored before say "class:"
    and are reworded here, so it is never read as the classifier's prediction (issue 16)."""
    lines = list((cf_row.get("metrics") or {}).get("attributes_changed") or [])
    return [f"{attribute_words('class')}:{s[len('class:'):]}" if s.startswith("class:") else s for s in lines]


def render_gan_attributes(cf_row: dict) -> None:
    """What the GCI search changed: "marker: top_left → bottom_right", "opacity: +0.80", or the latent offset."""
    m = cf_row.get("metrics") or {}
    mode = m.get("gan_mode") or (m.get("config") or {}).get("mode")
    lines = attribute_lines(cf_row)
    st.markdown("**Attribute changes**" + (f" · {mode} mode" if mode else ""))
    if lines:
        st.markdown("\n".join(f"- {md_escape(s)}" for s in lines))
    else:
        st.caption("no attribute changed by 0.1 or more")
    if m.get("attributes_source"):
        st.caption(f"starting attributes: {md_escape(m['attributes_source'])}")


def render_gan_result(cf_row: dict, arrs: dict | None = None, classes: list[str] | None = None,
                      key: str | None = None) -> None:
    """One GAN column: counterfactual, |Δ| map, probabilities before / after, metrics, category, attribute changes."""
    key = key or f"gan_col_{cf_row['id']}"
    arrs = arrs if arrs is not None else cfs.load_arrays_of(cf_row)
    m = cf_row.get("metrics") or {}
    classes = classes or m.get("classes") or [str(i) for i in range(len(m.get("probs_before") or []))]
    st.markdown(f"**{cfs.METHOD_LABELS.get('gan', 'GAN')}**")
    img = arrs["counterfactual"]
    st.image(gray_png(img), caption=f"#{cf_row['id']} · target {class_name(classes, cf_row['target'])}")
    show_delta(arrs["original"], img, arrs.get("marker"), "|Δ| (marker box outlined)")
    prob_bars(classes, m.get("probs_before") or [], m.get("probs_after") or [], key=f"{key}_bars")
    st.caption(prediction_line(m, cf_row["target"], classes))
    passes = m.get("generator_passes")
    result_captions(cf_row, f"{'n/a' if passes is None else passes} generator passes")
    st.caption(cross_text(m.get("cross_model") or {}, classes))  # as in the other columns
    badge(cf_row.get("category"))
    if m.get("category_basis") and not str(m["category_basis"]).startswith("bits/dim"):
        st.caption(f"unclassified: {m['category_basis']}")
    render_gan_attributes(cf_row)


def render_gan_trajectory(cf_row: dict, arrs: dict | None = None, key: str | None = None) -> None:
    """The GCI search: p(target) per Adam step and snapshots of G(I; A') every few steps."""
    key = key or f"gan_traj_{cf_row['id']}"
    arrs = arrs if arrs is not None else cfs.load_arrays_of(cf_row)
    if "trajectory" not in arrs:
        return
    trajectory_panel(f"**Search** of #{cf_row['id']}: G(I; A') and p(target) along the Adam steps", arrs, key,
                     "step {}", "G(I; A') at step {}", "Adam step")
