"""Pictures and panels shared by the counterfactual studio and its GAN column: PNGs at a fixed side, the |Δ| map
with the marker box outlined, class-probability bars, the category badge, and the trajectory panel (a slider over
stored snapshots beside the p(target) curve)."""
from __future__ import annotations

import io
import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages.parts.plain import md_escape
from services.presentation.palette import BEFORE_AFTER
from services.counterfactuals import runs as cfs

SIDE = 192
BADGE_COLOR = {"counterfactual": "green", "adversarial": "red", "affirmative": "blue", "none": "gray", "invalid": "orange"}


NA_HELP = ("n/a: not computed for this result (bits/dim needs the dataset's DDPM; shares need the lung / marker "
           "masks; older results lack newer fields)")


def fmt(v, nd: int = 3) -> str:
    """A number to nd decimals; "n/a" for a missing or NaN value (never "None" / "nan" on screen)."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def na_help(*texts: str) -> str | None:
    """The tooltip for a caption that shows "n/a" somewhere, else None."""
    return NA_HELP if any("n/a" in t for t in texts) else None


def class_name(classes: list[str], i) -> str:
    return classes[int(i)] if i is not None and 0 <= int(i) < len(classes) else ("n/a" if i is None else str(i))


def prediction_change(metrics: dict, target: int) -> tuple[int | None, int | None, bool]:
    """The classifier's prediction before and after the edit, as computed from the stored probabilities
    (argmax), and whether it flipped to the target: the one source of the class line and the verdict."""
    before, after = metrics.get("probs_before") or [], metrics.get("probs_after") or []
    p0 = int(np.argmax(before)) if len(before) else metrics.get("original_class")
    p1 = int(np.argmax(after)) if len(after) else metrics.get("pred")
    return p0, p1, p1 is not None and int(p1) == int(target)


def prediction_line(metrics: dict, target: int, classes: list[str]) -> str:
    """"classifier: COVID → Normal · flipped to the target Normal" (or "not flipped: target …")."""
    p0, p1, flipped = prediction_change(metrics, target)
    verdict = "flipped to the target" if flipped else "not flipped: the target is"
    names = [class_name(classes, i) for i in (p0, p1, target)]
    return f"classifier: {names[0]} → {names[1]} · {verdict} {names[2]}"


# ----------------------------------------------------------------------------------------------- pictures

@st.cache_resource(max_entries=2, show_spinner=False)
def _inferno() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def png(rgb: np.ndarray, side: int | None = SIDE) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.asarray(rgb, np.uint8))
    if side and im.width != side:
        im = im.resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def gray_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(a, np.uint8)[..., None], 3, axis=-1)


def masks_rgb(a: np.ndarray, lung: np.ndarray | None, marker: np.ndarray | None) -> np.ndarray:
    """The image with the lungs tinted blue and the marker yellow."""
    rgb = gray_rgb(a).astype(np.float32)
    if lung is not None:
        rgb = np.where(lung[..., None] > 0, 0.65 * rgb + 0.35 * np.array([0, 200, 255], np.float32), rgb)
    if marker is not None:
        rgb = np.where(marker[..., None] > 0, np.array([255, 200, 0], np.float32), rgb)
    return rgb.round().astype(np.uint8)


def delta_png(d: np.ndarray, marker: np.ndarray | None = None) -> bytes:
    """|Δ| (grey levels) in the inferno colormap (scaled to its max), the marker box outlined in cyan."""
    m = d / d.max() if d.max() > 0 else d
    rgb = _inferno()[(m * 255).round().astype(np.uint8)]
    box = cfs.marker_box(marker) if marker is not None else None
    if box is not None:
        ys, xs = np.nonzero(box)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        rgb = rgb.copy()
        rgb[[y0, y1], x0:x1 + 1] = (0, 220, 255)
        rgb[y0:y1 + 1, [x0, x1]] = (0, 220, 255)
    return png(rgb)


def show_delta(a: np.ndarray, b: np.ndarray, marker: np.ndarray | None, caption: str) -> None:
    """The |Δ| map with its colour bar: inferno from 0 (left) to the largest change (right), in grey levels."""
    d = np.abs(b.astype(np.float32) - a.astype(np.float32))
    st.image(delta_png(d, marker), caption=caption)
    bar = np.repeat(_inferno()[np.linspace(0, 255, 220).round().astype(int)][None], 12, axis=0)
    st.image(png(bar, None), caption=f"|Δ| 0 (left) → {d.max():.0f} grey levels (right)", width="stretch")


def gray_png(a: np.ndarray) -> bytes:
    return png(gray_rgb(a))


def prob_figure(classes: list[str], before, after) -> go.Figure:
    """Horizontal bars: class names on the y axis (read left to right, never rotated), probability 0–1 on x;
    before grey, after orange. No plotly legend: in a narrow column it wraps onto the bars, so a caption says
    which colour is which."""
    fig = go.Figure()
    for name, probs in (("before", before), ("after", after)):
        if probs is not None:
            fig.add_bar(y=list(classes), x=list(probs), orientation="h", name=name, marker_color=BEFORE_AFTER[name])
    fig.update_layout(barmode="group", height=70 + 34 * len(classes) * (2 if after is not None else 1),
                      margin=dict(l=0, r=0, t=8, b=0), showlegend=False)
    fig.update_xaxes(title_text="probability", range=[0, 1.02], tickformat=".1f")
    fig.update_yaxes(title_text="class", tickangle=0, autorange="reversed", automargin=True)
    return fig


def prob_bars(classes: list[str], before, after, key: str, target: int | None = None) -> None:
    """Class probabilities before (grey) and after (orange) as horizontal bars (prob_figure)."""
    st.plotly_chart(prob_figure(classes, before, after), key=key, width="stretch", config={"displayModeBar": False})
    if after is not None:
        st.caption("grey: before · orange: after")


def badge(category: str | None) -> None:
    if category is None or category == "unclassified":
        st.caption("category: unclassified (no density model to score fidelity; a flip alone is no counterfactual)")
    else:
        st.badge(category, color=BADGE_COLOR.get(category, "gray"))


def trajectory_panel(title: str, arrs: dict, key: str, step_label: str, image_caption: str, x_title: str,
                     reverse_x: bool = False) -> None:
    """Snapshots arrs["trajectory"] at steps arrs["trajectory_t"] on a slider, beside p(target) per step
    (arrs["prob_curve"] at arrs["curve_t"]) with the chosen step marked. Labels: "t = {}" style formats."""
    frames, ft = arrs["trajectory"], arrs["trajectory_t"]
    curve, ct = arrs["prob_curve"], arrs["curve_t"]
    with st.container(border=True):
        st.markdown(title)
        c1, c2 = st.columns([1, 2])
        with c1:
            i = st.select_slider("step", options=list(range(len(ft))), value=len(ft) - 1,
                                 format_func=lambda j: step_label.format(int(ft[j])), key=f"{key}_slider")
            st.image(gray_png(frames[i]), caption=image_caption.format(int(ft[i])))
        with c2:
            ok = np.isfinite(curve)
            fig = go.Figure()
            fig.add_scatter(x=ct[ok], y=curve[ok], mode="lines+markers", name="p(target)")
            fig.add_vline(x=int(ft[i]), line_dash="dot", line_color=BEFORE_AFTER["after"])
            fig.update_layout(height=230, margin=dict(l=0, r=0, t=10, b=0), yaxis_range=[0, 1],
                              xaxis_title=x_title, yaxis_title="p(target)",
                              xaxis_autorange="reversed" if reverse_x else True)
            st.plotly_chart(fig, key=f"{key}_curve", width="stretch")


def result_captions(row: dict, passes: str) -> None:
    """p(target), the flip verdict (the same argmax as the class line), L1, bits/dim against the original, the
    generator passes (`passes`, in words), seconds; then the |Δ| shares in the marker box and the lungs."""
    m = row.get("metrics") or {}
    bpd, b0 = row.get("bpd"), m.get("bpd_original")
    d_bpd = bpd - b0 if (bpd is not None and b0 is not None) else None
    flipped = prediction_change(m, row["target"])[2]
    line = (f"p(target) {fmt(row['target_prob'])} · {'flipped' if flipped else 'not flipped'} · "
            f"L1 {fmt(row['l1'], 4)} · bpd {fmt(bpd)} (ε {fmt(m.get('bpd_eps'))}, "
            f"{'+' if (d_bpd or 0) >= 0 else ''}{fmt(d_bpd, 2)} vs the original) · {passes} · "
            f"{fmt(row['seconds'], 1)} s")
    st.caption(line, help=na_help(line))
    shares = f"|Δ| in marker box {fmt(m.get('marker_share'), 2)} · in lungs {fmt(m.get('lung_share'), 2)}"
    st.caption(shares, help=na_help(shares))


def cross_text(cross: dict, classes: list[str]) -> str:
    """The independent classifier B's verdict on the counterfactual, in words."""
    if cross.get("flipped") is None:
        return "independent classifier: none for this dataset (cross-model validity not checked)"
    pred = classes[cross["pred"]] if cross.get("pred") is not None and cross["pred"] < len(classes) else "?"
    return (f"independent classifier #{cross['model_id']}: {'flipped too' if cross['flipped'] else 'not flipped'} "
            f"(says {md_escape(pred)}, p(target) {fmt(cross.get('target_prob'))})")  # a class name: plain text
