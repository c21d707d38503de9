"""Issue 16 (readable plots): probability bars read horizontally with titled axes; every heatmap / difference map
has a titled colour bar in the palette's scales, difference maps centred on 0; the retrain history is small
panels with their own y-axis titles, integer epoch ticks, palette colours and a legend below the data."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from services.presentation.palette import BEFORE_AFTER, DIFF_SCALE, HEATMAP_SCALE, version_colours


def _scale(name: str):
    return go.Heatmap(colorscale=name).colorscale


def test_probability_bars_are_horizontal_with_titled_axes():
    from pages.parts.cf_view import prob_figure

    classes = ["Normal", "COVID", "Viral Pneumonia"]
    fig = prob_figure(classes, [0.1, 0.8, 0.1], [0.9, 0.05, 0.05])
    assert [t.orientation for t in fig.data] == ["h", "h"]
    assert list(fig.data[0].y) == classes and list(fig.data[1].x) == [0.9, 0.05, 0.05]
    assert fig.layout.xaxis.title.text == "probability" and fig.layout.yaxis.title.text == "class"
    assert fig.layout.yaxis.tickangle == 0 and tuple(fig.layout.xaxis.range) == (0, 1.02)
    assert [t.marker.color for t in fig.data] == [BEFORE_AFTER["before"], BEFORE_AFTER["after"]]


def test_difference_map_is_symmetric_with_a_titled_colour_bar():
    from pages.parts.viewer import Panel, synced_figure

    a = np.full((16, 16), 100, np.uint8)
    d = np.zeros((16, 16), np.float32)
    d[2, 2], d[3, 3] = 30, -10
    fig = synced_figure([Panel("original", a), Panel("difference", diff=d)])
    h = next(t for t in fig.data if t.name == "difference")
    assert h.colorscale == _scale(DIFF_SCALE) and h.zmid == 0 and h.zmin == -h.zmax == -30
    assert h.showscale and "Δ grey level" in h.colorbar.title.text


def test_map_overlays_have_one_titled_colour_bar():
    from pages.parts.viewer import Panel, synced_figure

    img = np.zeros((16, 16), np.uint8)
    m = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    fig = synced_figure([Panel("before", img, m), Panel("after", img, m)])
    maps = [t for t in fig.data if t.name == "map"]
    assert [bool(t.showscale) for t in maps] == [True, False]  # the same 0–1 range: one bar, not two on top
    assert "map value E" in maps[0].colorbar.title.text


def test_report_confusion_matrices_share_a_titled_palette_scale():
    from services.presentation.report_view import figures

    data = {"parent": {"id": 1}, "child": {"id": 2}, "classes": ["a", "b"], "history": [],
            "confusion": {"test": {"parent": [[5, 1], [2, 4]], "child": [[6, 0], [1, 5]]}}}
    fig = figures(data)["confusion_test"]
    assert [t.coloraxis for t in fig.data] == ["coloraxis", "coloraxis"]
    ca = fig.layout.coloraxis
    assert ca.colorscale == _scale(HEATMAP_SCALE) and ca.cmin == 0 and ca.colorbar.title.text == "images"


def _history() -> list[dict]:
    rows = []
    for run in ("child", "control"):
        for ep in (1, 2, 3):
            r = {"epoch": ep, "run": run, "ce": 1.0 / ep, "val_acc": 0.5 + 0.1 * ep, "val_ar": 0.4, "val_ap": 0.3}
            if run == "child":
                r.update(expl=0.2 / ep, active=0.5, d_pos=0.3, d_neg=0.6)
            rows.append(r)
    return rows


def test_retrain_history_is_small_panels_with_titles_integer_epochs_and_palette_colours():
    from services.presentation.report_view import HISTORY_PANELS, history_figure

    fig = history_figure(_history())
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [t for _, t in HISTORY_PANELS]  # one panel per metric, titled with its unit
    yaxes = [fig.layout[k] for k in fig.layout if k.startswith("yaxis")]
    xaxes = [fig.layout[k] for k in fig.layout if k.startswith("xaxis")]
    assert len(yaxes) == 8 and all(y.title.text for y in yaxes)
    assert all(x.tickformat == "d" and x.dtick == 1 and x.title.text == "epoch" for x in xaxes)
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == ["retrained child", "matched control (plain CE)"]  # two runs, not one entry per series
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the panels
    colours = version_colours(["parent", "child", "control"])
    for t in fig.data:
        who = "control" if t.legendgroup == "control" else "child"
        assert t.line.color == colours[who] and t.line.dash == ("dash" if who == "control" else "solid")
    ce = [t for t in fig.data if t.xaxis == "x"]
    assert [list(t.x) for t in ce] == [[1, 2, 3], [1, 2, 3]]


def test_report_accuracy_bars_have_axis_titles_and_palette_colours():
    from services.presentation.report_view import accuracy_figure

    cell = {"accuracy": 0.8, "ci": {"accuracy": [0.7, 0.9]}}
    fig = accuracy_figure({"splits": {"val": {"parent": cell, "child": cell}, "test": {"parent": cell, "child": cell}}})
    assert fig.layout.yaxis.title.text == "accuracy (0–1)" and fig.layout.xaxis.title.text == "held-out split"
    colours = version_colours(["parent", "child", "control"])
    assert [(t.name, t.marker.color) for t in fig.data] == [("parent", colours["parent"]), ("child", colours["child"])]
