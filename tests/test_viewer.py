"""The reader's viewer (pages/parts/viewer.py): the figure carries the native-size image and the overlay, the mask
outlines on demand, window / level, and side-by-side panels on matched (synced) axes; also through AppTest."""
from __future__ import annotations

import json

import numpy as np
from streamlit.testing.v1 import AppTest


def _panel(side: int = 96):
    from pages.parts.viewer import Panel

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (side, side), dtype=np.uint8)
    emap = rng.random((side, side)).astype(np.float32)
    lung = np.zeros((side, side), np.uint8)
    lung[20:70, 10:40] = 1
    return Panel("x", img, emap, {"relevance mask (lungs)": lung})


def test_figure_has_native_image_overlay_and_outlines():
    from pages.parts.viewer import ViewerSettings, viewer_figure

    p = _panel(299)
    s = ViewerSettings(opacity=0.3, cmap="inferno", level=100, width=50, outlines=["relevance mask (lungs)"])
    fig = viewer_figure(p, s)
    kinds = [t.type for t in fig.data]
    assert kinds == ["heatmap", "heatmap", "contour"]
    img, ov = fig.data[0], fig.data[1]
    assert np.asarray(img.z).shape == (299, 299)
    assert np.array_equal(np.asarray(img.z), p.image)  # no resampling: native pixels
    assert (img.zmin, img.zmax) == (75, 125)  # window / level
    assert np.asarray(ov.z).shape == (299, 299) and ov.opacity == 0.3
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.scaleanchor == "x"
    assert len(viewer_figure(p, ViewerSettings(outlines=[])).data) == 2  # outlines only on demand


def test_side_by_side_axes_are_synced():
    from pages.parts.viewer import Panel, synced_figure

    a = _panel()
    fig = synced_figure([a, Panel("after", a.image, a.emap[::-1].copy(), a.masks),
                         Panel("difference", diff=np.ones((96, 96), np.float32))])
    assert fig.layout.xaxis2.matches == "x" and fig.layout.xaxis3.matches == "x"
    assert fig.layout.yaxis2.matches == "y" and fig.layout.yaxis3.matches == "y"
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3"}


def _viewer_app():
    import numpy as np

    from pages.parts.viewer import Panel, show

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (128, 128), dtype=np.uint8)
    m = rng.random((128, 128)).astype(np.float32)
    lung = np.zeros((128, 128), np.uint8)
    lung[30:90, 20:60] = 1
    show("v", [Panel("before", img, m, {"relevance mask (lungs)": lung}),
               Panel("after", img, m[::-1].copy(), {"relevance mask (lungs)": lung})])


def test_viewer_in_apptest_carries_image_overlay_and_synced_axes():
    at = AppTest.from_function(_viewer_app, default_timeout=60).run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    traces = spec["data"]
    assert [t["type"] for t in traces] == ["heatmap"] * 4
    z = traces[0]["z"]
    shape = tuple(int(v) for v in str(z["shape"]).split(",")) if isinstance(z, dict) else np.asarray(z).shape
    assert shape == (128, 128)
    assert traces[1]["opacity"] == 0.45
    assert spec["layout"]["xaxis2"]["matches"] == "x" and spec["layout"]["yaxis2"]["matches"] == "y"
    # outlines on demand, and the opacity slider reaches the figure
    at.multiselect(key="v_outlines").set_value(["relevance mask (lungs)"])
    at.slider(key="v_opacity").set_value(0.8).run()
    assert not at.exception
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert [t["type"] for t in traces].count("contour") == 2
    assert traces[1]["opacity"] == 0.8
