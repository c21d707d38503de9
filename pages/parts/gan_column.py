"""The GAN (GCI) column of the counterfactual studio: the result under the same metrics as diffusion (validity,
closeness, bits/dim under the dataset's DDPM, category) plus what the search changed, in words.

render_gan_result(cf_row) draws the whole column from a stored `counterfactuals` row (arrays loaded here when not
given); render_gan_attributes(cf_row) only the attribute-change block, for a page that draws the common part
itself; render_gan_trajectory(cf_row) the search trajectory (p(target) per Adam step and G(I; A') snapshots).
"""
from __future__ import annotations

import io
import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from services import counterfactuals as cfs

SIDE = 192
BADGE_COLOR = {"counterfactual": "green", "adversarial": "red", "affirmative": "blue", "none": "gray"}


def _fmt(v, nd: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.asarray(a, np.uint8))
    if im.width != SIDE:
        im = im.resize((SIDE, SIDE), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _delta(a: np.ndarray, b: np.ndarray, marker: np.ndarray | None) -> np.ndarray:
    """|Δ| scaled to its max as a red-on-black RGB image, the marker box outlined in cyan."""
    d = np.abs(b.astype(np.float32) - a.astype(np.float32))
    m = d / d.max() if d.max() > 0 else d
    rgb = np.stack([m * 255, m ** 2 * 200, m ** 4 * 120], -1).round().astype(np.uint8)
    box = cfs.marker_box(marker) if marker is not None else None
    if box is not None:
        ys, xs = np.nonzero(box)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        rgb[[y0, y1], x0:x1 + 1] = (0, 220, 255)
        rgb[y0:y1 + 1, [x0, x1]] = (0, 220, 255)
    return rgb


def attribute_lines(cf_row: dict) -> list[str]:
    """The attribute changes of a stored GAN result, in words (empty when nothing changed)."""
    return list((cf_row.get("metrics") or {}).get("attributes_changed") or [])


def render_gan_attributes(cf_row: dict) -> None:
    """What the GCI search changed: "marker: top_left → bottom_right", "opacity: +0.80", or the latent offset."""
    m = cf_row.get("metrics") or {}
    mode = m.get("gan_mode") or (m.get("config") or {}).get("mode")
    lines = attribute_lines(cf_row)
    st.markdown("**Attribute changes**" + (f" · {mode} mode" if mode else ""))
    if lines:
        st.markdown("\n".join(f"- `{s}`" for s in lines))
    else:
        st.caption("no attribute changed by 0.1 or more")
    if m.get("attributes_source"):
        st.caption(f"starting attributes: {m['attributes_source']}")


def render_gan_result(cf_row: dict, arrs: dict | None = None, classes: list[str] | None = None,
                      key: str | None = None) -> None:
    """One GAN column: counterfactual, |Δ| map, probabilities before / after, metrics, category, attribute changes."""
    key = key or f"gan_col_{cf_row['id']}"
    arrs = arrs if arrs is not None else cfs.load_arrays_of(cf_row)
    m = cf_row.get("metrics") or {}
    classes = classes or m.get("classes") or [str(i) for i in range(len(m.get("probs_before") or []))]
    st.markdown(f"**{cfs.METHOD_LABELS.get('gan', 'GAN')}**")
    img = arrs["counterfactual"]
    st.image(_png(np.repeat(img[..., None], 3, -1)), caption=f"#{cf_row['id']} → {classes[cf_row['target']]}")
    st.image(_png(_delta(arrs["original"], img, arrs.get("marker"))), caption="|Δ| (marker box outlined)")
    fig = go.Figure()
    fig.add_bar(x=classes, y=list(m.get("probs_before") or []), name="before", marker_color="#9aa5b1")
    fig.add_bar(x=classes, y=list(m.get("probs_after") or []), name="after", marker_color="#e4572e")
    fig.update_layout(barmode="group", height=190, margin=dict(l=0, r=0, t=4, b=0), yaxis_range=[0, 1],
                      legend=dict(orientation="h", y=1.15, x=0))
    st.plotly_chart(fig, key=f"{key}_bars", width="stretch", config={"displayModeBar": False})
    bpd, b0 = cf_row.get("bpd"), m.get("bpd_original")
    d_bpd = bpd - b0 if (bpd is not None and b0 is not None) else None
    st.caption(f"p(target) {_fmt(cf_row['target_prob'])} · {'flipped' if cf_row['flipped'] else 'not flipped'} · "
               f"L1 {_fmt(cf_row['l1'], 4)} · bpd {_fmt(bpd)} (ε {_fmt(m.get('bpd_eps'))}, "
               f"{'+' if (d_bpd or 0) >= 0 else ''}{_fmt(d_bpd, 2)} vs the original) · "
               f"{m.get('generator_passes', '—')} generator passes · {_fmt(cf_row['seconds'], 1)} s")
    st.caption(f"|Δ| in marker box {_fmt(m.get('marker_share'), 2)} · in lungs {_fmt(m.get('lung_share'), 2)}")
    cat = cf_row.get("category")
    if cat is None:
        st.caption("category: —")
    else:
        st.badge(cat, color=BADGE_COLOR.get(cat, "gray"))
    if m.get("category_basis") and not str(m["category_basis"]).startswith("bits/dim"):
        st.caption(f"category by {m['category_basis']}")
    render_gan_attributes(cf_row)


def render_gan_trajectory(cf_row: dict, arrs: dict | None = None, key: str | None = None) -> None:
    """The GCI search: p(target) per Adam step and snapshots of G(I; A') every few steps."""
    key = key or f"gan_traj_{cf_row['id']}"
    arrs = arrs if arrs is not None else cfs.load_arrays_of(cf_row)
    if "trajectory" not in arrs:
        return
    frames, ft = arrs["trajectory"], arrs["trajectory_t"]
    curve, ct = arrs["prob_curve"], arrs["curve_t"]
    with st.container(border=True):
        st.markdown(f"**Search** of #{cf_row['id']}: G(I; A') and p(target) along the Adam steps")
        c1, c2 = st.columns([1, 2])
        with c1:
            i = st.select_slider("step", options=list(range(len(ft))), value=len(ft) - 1,
                                 format_func=lambda j: f"step {int(ft[j])}", key=f"{key}_slider")
            st.image(_png(np.repeat(frames[i][..., None], 3, -1)), caption=f"G(I; A') at step {int(ft[i])}")
        with c2:
            ok = np.isfinite(curve)
            fig = go.Figure()
            fig.add_scatter(x=ct[ok], y=curve[ok], mode="lines+markers", name="p(target)")
            fig.add_vline(x=int(ft[i]), line_dash="dot", line_color="#e4572e")
            fig.update_layout(height=230, margin=dict(l=0, r=0, t=10, b=0), yaxis_range=[0, 1],
                              xaxis_title="Adam step", yaxis_title="p(target)")
            st.plotly_chart(fig, key=f"{key}_curve", width="stretch")
