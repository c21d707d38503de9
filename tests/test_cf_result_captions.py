"""Issue 16 (captions that follow the numbers): the counterfactual / GAN result's class line names the classifier's
prediction before and after the edit (argmax of the stored probabilities) and agrees with the flip verdict; the GAN's
class attribute is named as the generator's input; no "None" / "nan" on screen."""
from __future__ import annotations

import numpy as np

from pages.parts.cf_view import fmt, prediction_change, prediction_line
from pages.parts.plain import md_escape

CLASSES = ["Normal", "COVID", "Viral Pneumonia"]


def _gan_row(flipped_to: int) -> dict:
    after = [0.05, 0.05, 0.05]
    after[flipped_to] = 0.9
    return {"id": 7, "target": 0, "flipped": flipped_to == 0, "target_prob": after[0], "l1": 0.0123,
            "seconds": 1.5, "bpd": None, "category": "unclassified",
            "metrics": {"classes": CLASSES, "probs_before": [0.1, 0.8, 0.1], "probs_after": after,
                        "original_class": 1, "pred": flipped_to, "gan_mode": "attributes",
                        "attributes_changed": ["class: COVID → Viral Pneumonia", "opacity: +0.80"],
                        "generator_passes": 12, "bpd_original": None, "bpd_eps": None}}


def test_prediction_line_follows_the_probabilities_and_the_verdict():
    m = _gan_row(0)["metrics"]
    assert prediction_change(m, 0) == (1, 0, True)
    assert prediction_line(m, 0, CLASSES) == "classifier: COVID → Normal · flipped to the target Normal"
    m2 = _gan_row(2)["metrics"]  # moved to Viral Pneumonia, target Normal: not flipped
    line = prediction_line(m2, 0, CLASSES)
    assert line == "classifier: COVID → Viral Pneumonia · not flipped: the target is Normal"
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a" and fmt(0.5, 2) == "0.50"


def _render_gan(row: dict):
    from streamlit.testing.v1 import AppTest

    script = f"""
import numpy as np
from pages.parts.gan_column import render_gan_result
arrs = {{"original": np.zeros((8, 8), np.uint8), "counterfactual": np.full((8, 8), 40, np.uint8)}}
render_gan_result({row!r}, arrs)
"""
    at = AppTest.from_string(script, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def test_gan_column_class_line_names_the_classifier_prediction():
    at = _render_gan(_gan_row(0))
    caps = [c.value for c in at.caption]
    assert "classifier: COVID → Normal · flipped to the target Normal" in caps
    verdict = next(c for c in caps if c.startswith("p(target)"))
    assert "· flipped ·" in verdict
    md = "\n".join(m.value for m in at.markdown)
    # the attribute is what the generator was told, named so, never as if the classifier said it
    assert md_escape("generator's class input: COVID → Viral Pneumonia") in md
    assert "- " + md_escape("class: COVID") not in md
    img_caps = [i.caption for el in at.get("image") for i in el.proto.imgs]
    assert "#7 · target Normal" in img_caps
    for text in caps + [md] + img_caps:
        assert "None" not in text and "nan" not in text.lower().replace("n/a", ""), text
    na = next(c for c in at.caption if c.value.startswith("p(target)"))
    assert "bpd n/a" in na.value and na.proto.help  # n/a comes with a tooltip saying why
