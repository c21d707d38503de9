"""The reader's viewer: one image at its native resolution with its map overlaid, as a plotly figure (zoom and pan,
scroll zoom), with overlay opacity, colormap, window / level and the mask outlines on demand; side-by-side views
(original | counterfactual | difference, before | after) share their axes, so they zoom and pan together.

The figure builders (viewer_figure, synced_figure) are plain functions for tests and benches; show() draws the
controls and the chart; explanation_viewer / before_after_viewer / counterfactual_viewer are the entry points the
gallery, the report and the studio open.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from services.presentation.palette import DIFF_SCALE
from pages.parts.overlays import COLORMAPS
from services.data.datasets import load_arrays
from services.explanations.explaining import load_maps
from services.models.registry import get_model

COLORSCALES = {"jet": "Jet", "inferno": "Inferno", "viridis": "Viridis", "hot": "Hot", "gray": "Greys"}
OUTLINE_COLORS = {"relevance mask (lungs)": "#00c8ff", "confounder mask (marker)": "#ff5000",
                  "lesion mask": "#7cfc00"}
HEIGHT = 640


@dataclass
class ViewerSettings:
    """What the reader chose: overlay opacity, colormap, window / level (grey levels 0–255), outlines shown."""

    opacity: float = 0.45
    cmap: str = "jet"
    level: float = 127.5
    width: float = 255.0
    hide_below: float = 0.05  # map values under this stay transparent (the image shows through)
    outlines: list[str] = field(default_factory=list)
    show_map: bool = True

    @property
    def window(self) -> tuple[float, float]:
        return self.level - self.width / 2, self.level + self.width / 2


@dataclass
class Panel:
    """One picture: a grayscale image (H, W) uint8, an optional map (H, W) in [0, 1] at the same size, the masks
    that can be outlined, or a signed difference (diff, in grey levels) drawn in a diverging colormap."""

    title: str
    image: np.ndarray | None = None
    emap: np.ndarray | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    diff: np.ndarray | None = None


def _traces(p: Panel, s: ViewerSettings) -> list:
    out = []
    if p.diff is not None:
        d = np.asarray(p.diff, np.float32)
        lim = float(np.abs(d).max()) or 1.0
        out.append(go.Heatmap(z=d, colorscale=DIFF_SCALE, zmid=0, zmin=-lim, zmax=lim, showscale=True,
                              colorbar=dict(title=dict(text="Δ grey level<br>(cf − original)"), thickness=12),
                              hovertemplate="x %{x} · y %{y} · Δ %{z:.1f}<extra></extra>", name="difference"))
    else:
        lo, hi = s.window
        out.append(go.Heatmap(z=np.asarray(p.image), colorscale="gray", zmin=lo, zmax=hi, showscale=False,
                              hovertemplate="x %{x} · y %{y} · grey %{z}<extra></extra>", name="image"))
        if p.emap is not None and s.show_map:
            m = np.asarray(p.emap, np.float32).copy()
            if m.shape != np.asarray(p.image).shape:
                raise ValueError(f"map {m.shape} and image {np.asarray(p.image).shape} differ in size")
            m[~(m >= s.hide_below)] = np.nan  # transparent below the threshold (and where undefined)
            out.append(go.Heatmap(z=m, colorscale=COLORSCALES.get(s.cmap, "Jet"), zmin=0, zmax=1,
                                  opacity=s.opacity, showscale=True, name="map", colorbar=dict(
                                      title=dict(text="map value E<br>(0–1)"), thickness=12),
                                  hovertemplate="x %{x} · y %{y} · E %{z:.2f}<extra></extra>"))
    for name in s.outlines:
        mk = p.masks.get(name)
        if mk is None or not np.any(mk):
            continue
        out.append(go.Contour(z=(np.asarray(mk) > 0).astype(np.uint8), showscale=False, hoverinfo="skip",
                              contours=dict(start=0.5, end=0.5, size=1, coloring="lines"), name=name,
                              line=dict(color=OUTLINE_COLORS.get(name, "#ffffff"), width=2)))
    return out


def viewer_figure(panel: Panel, settings: ViewerSettings | None = None, height: int = HEIGHT) -> go.Figure:
    """One panel at native resolution: pixels square, y down, zoom / pan / scroll zoom."""
    return synced_figure([panel], settings, height)


def synced_figure(panels: list[Panel], settings: ViewerSettings | None = None, height: int = HEIGHT) -> go.Figure:
    """Panels side by side on matched axes: zooming or panning one moves all of them."""
    s = settings or ViewerSettings()
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p.title for p in panels],
                        horizontal_spacing=0.02)
    scaled: set[str] = set()
    for c, p in enumerate(panels, start=1):
        for tr in _traces(p, s):
            if getattr(tr, "showscale", None):  # one colour bar per kind: panels of a kind share its range
                tr.showscale = tr.name not in scaled
                scaled.add(tr.name)
            fig.add_trace(tr, row=1, col=c)
    fig.update_xaxes(matches="x", showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(matches="y", showgrid=False, zeroline=False, autorange="reversed", constrain="domain")
    fig.update_layout(yaxis=dict(scaleanchor="x", scaleratio=1), height=height, dragmode="pan",
                      margin=dict(l=0, r=0, t=28, b=0), showlegend=False, uirevision="viewer")
    return fig


def controls(key: str, outline_names: list[str], has_map: bool = True) -> ViewerSettings:
    """The viewer's controls in one row; every widget keyed under `key`."""
    c = st.columns([1.2, 1, 1.4, 1.4, 2])
    s = ViewerSettings()
    s.show_map = has_map and c[0].toggle("Map", value=True, key=f"{key}_map", disabled=not has_map)
    s.opacity = c[0].slider("Opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}_opacity", disabled=not has_map)
    s.cmap = c[1].selectbox("Colormap", COLORMAPS, key=f"{key}_cmap", disabled=not has_map)
    s.level = c[2].slider("Level (window centre)", 0, 255, 128, key=f"{key}_level")
    s.width = c[3].slider("Window (width)", 1, 255, 255, key=f"{key}_width")
    s.hide_below = c[1].slider("Hide map below", 0.0, 0.9, 0.05, 0.05, key=f"{key}_hide", disabled=not has_map)
    s.outlines = c[4].multiselect("Mask outlines", outline_names, key=f"{key}_outlines")
    return s


def show(key: str, panels: list[Panel]) -> go.Figure:
    """Controls plus the synced figure; returns the figure drawn."""
    names = sorted({n for p in panels for n, m in p.masks.items() if m is not None and np.any(m)})
    s = controls(key, names, has_map=any(p.emap is not None for p in panels))
    fig = synced_figure(panels, s)
    st.plotly_chart(fig, key=f"{key}_fig", width="stretch", config={"scrollZoom": True, "displaylogo": False})
    h, w = np.asarray(panels[0].image if panels[0].image is not None else panels[0].diff).shape
    st.caption(f"{w}×{h} px, native resolution · drag to pan, scroll or box-zoom, double-click to reset"
               + (" · the pictures zoom and pan together" if len(panels) > 1 else ""))
    return fig


def _gray(a) -> np.ndarray:
    """uint8 grey levels from uint8, or from floats in [0, 1]."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    return (a * 255 if np.nanmax(a) <= 1.0 else a).round().clip(0, 255).astype(np.uint8)


def report_pair_viewer(data: dict, key: str) -> go.Figure | None:
    """The report's entry: pick one of the images whose AR changed most, see both maps at native size."""
    rows = data.get("changed") or []
    if not rows:
        return None
    j = st.selectbox("Image", range(len(rows)), key=f"{key}_pick", format_func=lambda k: str(rows[k]["path"]))
    r = rows[j]
    a = load_arrays(get_model(data["child"]["id"])["dataset_id"], mmap=True)
    arr = {"images": a.images, "lung": a.lung, "marker": a.marker, "has_lung": a.has_lung, "has_marker": a.has_marker}
    mp, mc = load_maps(data["runs"]["parent"]), load_maps(data["runs"]["child"])
    return before_after_viewer(arr, int(r["image_index"]), mp[int(r["map_parent"])], mc[int(r["map_child"])],
                               key=key, titles=(f"before #{data['parent']['id']}", f"after #{data['child']['id']}"))


def _masks(arr: dict, i: int) -> dict[str, np.ndarray]:
    out = {}
    if arr.get("has_lung") is not None and bool(arr["has_lung"][i]):
        out["relevance mask (lungs)"] = np.asarray(arr["lung"][i])
    if arr.get("has_marker") is not None and bool(arr["has_marker"][i]):
        out["confounder mask (marker)"] = np.asarray(arr["marker"][i])
    return out


def explanation_viewer(arr: dict, i: int, emap: np.ndarray, title: str, key: str) -> go.Figure:
    """The gallery's detail view: image i of the dataset cache (native size) with its map and masks."""
    return show(key, [Panel(title, np.asarray(arr["images"][i]), np.asarray(emap, np.float32), _masks(arr, i))])


def before_after_viewer(arr: dict, i: int, map_before: np.ndarray, map_after: np.ndarray, key: str,
                        titles: tuple[str, str] = ("before", "after")) -> go.Figure:
    """The report's pair: one image with the parent's and the child's maps, zooming and panning together."""
    img, m = np.asarray(arr["images"][i]), _masks(arr, i)
    return show(key, [Panel(titles[0], img, np.asarray(map_before, np.float32), m),
                      Panel(titles[1], img, np.asarray(map_after, np.float32), m)])


def counterfactual_viewer(original: np.ndarray, counterfactual: np.ndarray, key: str,
                          masks: dict[str, np.ndarray] | None = None) -> go.Figure:
    """The studio's triple: original | counterfactual | difference (counterfactual − original, grey levels)."""
    a, b = _gray(original), _gray(counterfactual)
    m = masks or {}
    return show(key, [Panel("original", a, None, m), Panel("counterfactual", b, None, m),
                      Panel("difference", diff=b.astype(np.float32) - a.astype(np.float32), masks=m)])


@st.dialog("Counterfactual viewer", width="large")
def counterfactual_dialog(original: np.ndarray, counterfactual: np.ndarray, key: str,
                          masks: dict[str, np.ndarray] | None = None) -> None:
    """The studio's viewer in a large dialog (up to 1280 px): a result column is ~150 px wide, too narrow for the
    viewer's controls and three pictures."""
    counterfactual_viewer(original, counterfactual, key, masks)
