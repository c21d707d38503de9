"""The one colour table: a fixed colour per explanation / counterfactual method (keyed by the registries' names,
core.registries), per split and per model version, plus the colour scales of heatmaps and difference maps. The pages
and the retrain report's figures import it (pure data, no plotting library), so GradCAM is the same blue on every
chart. Colours are Okabe-Ito (safe for colour-blind readers) extended with a few distinct tones; a new method is its
spec in core.registries and one line in METHOD_COLOURS (tests/test_registries.py checks every method has one).
"""
from __future__ import annotations

from core.registries import COUNTERFACTUAL_METHODS, EXPLANATION_METHODS

# Explanation methods and counterfactual methods, by registered name: one colour each, none shared.
METHOD_COLOURS: dict[str, str] = {
    "gradcam": "#0072B2",               # blue
    "integrated_gradients": "#E69F00",  # orange
    "saliency": "#009E73",              # bluish green
    "occlusion": "#CC79A7",             # reddish purple
    "guided_gradcam": "#56B4E9",        # sky blue
    "ltx": "#D55E00",                   # vermillion
    "ltx_pretrained": "#8C564B",        # brown
    "ltx_sampled": "#BCBD22",           # olive
    "diffusion": "#7B3294",             # purple
    "gan": "#1B7837",                   # dark green
    "adversarial": "#636363",           # dark grey
}
# Display names (the registries' labels); a chart keyed by label gets the same colour as one keyed by name.
METHOD_LABELS: dict[str, str] = {**EXPLANATION_METHODS.labels(), **COUNTERFACTUAL_METHODS.labels()}
SPLIT_COLOURS: dict[str, str] = {"train": "#999999", "val": "#56B4E9", "test": "#0072B2", "test_shifted": "#D55E00"}
# Model versions on one chart (baseline, retrained, control …), by position: distinct from the method colours' order.
VERSION_COLOURS: tuple[str, ...] = ("#444444", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
FALLBACK = ("#17BECF", "#9467BD", "#7F7F7F", "#AEC7E8", "#FF9896", "#C5B0D5")
CANCELLED = "#9E9E9E"   # a cancelled job's bar
# One image before / after an edit (counterfactual probability bars, the chosen step on a trajectory).
BEFORE_AFTER: dict[str, str] = {"before": "#9aa5b1", "after": "#e4572e"}
HEATMAP_SCALE = "Viridis"   # non-negative maps and matrices (confusion, relevance)
DIFF_SCALE = "RdBu_r"       # signed difference maps (x' − x): blue darker, red brighter, white no change


def method_colour(method: str) -> str:
    """The colour of a method by registry name or display label; unknown names get a stable fallback colour."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    by_label = {v: k for k, v in METHOD_LABELS.items()}
    if method in by_label:
        return METHOD_COLOURS[by_label[method]]
    return FALLBACK[sum(map(ord, method)) % len(FALLBACK)]


def colour_map(names) -> dict[str, str]:
    """{name: colour} for plotly's color_discrete_map, for method names or labels."""
    return {n: method_colour(n) for n in names}


def version_colours(names) -> dict[str, str]:
    """Model versions in the given order → VERSION_COLOURS (cycled)."""
    return {n: VERSION_COLOURS[i % len(VERSION_COLOURS)] for i, n in enumerate(dict.fromkeys(names))}
