"""Evidence of a retrain (core.xbl.evidence, core.xbl.verdict): the verdict sentence from hand-made intervals (a
table over every lead, the four recipe ± / choice ± cases, zero-width intervals), the cells and effects of
summarise() over seeds, held-out splits only; and eXBL's training and reference anchors agree for a model with
dropout (one forward mode for the CAM)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.models.base import Classifier
from core.xbl import Exemplar, reference_anchor, training_anchors
from core.xbl import cam as C
from core.xbl.evidence import summarise
from core.xbl.verdict import direction, verdict

def _e(mean, low, high, **kw):
    return {"mean": mean, "low": low, "high": high, **kw}


UP, DOWN, FLAT = _e(0.1, 0.05, 0.15), _e(-0.1, -0.15, -0.05), _e(0.01, -0.02, 0.04)


def _rows(effect=FLAT, recipe=None, choice=None, parent=FLAT, control_parent=FLAT, iid=FLAT) -> dict:
    sh = {"effect": {"accuracy": effect}, "effect_parent": {"accuracy": parent},
          "control_parent": {"accuracy": control_parent}}
    if recipe is not None:
        sh.update(effect_recipe={"accuracy": recipe}, effect_choice={"accuracy": choice})
    return {"test_shifted": sh, "test": {"effect": {"accuracy": iid}}}


@pytest.mark.parametrize("kw, lead", [
    (dict(parent=DOWN, control_parent=DOWN, effect=UP), "The retrained model is worse than its parent on "
                                                        "test_shifted, and so is plain fine-tuning"),
    (dict(parent=DOWN), "The retrained model is worse than its parent on test_shifted:"),
    (dict(effect=UP, recipe=UP, choice=FLAT), "The retrain reduced the shortcut"),
    (dict(effect=DOWN, recipe=DOWN, choice=DOWN), "The retrain made the model worse than plain fine-tuning"),
    (dict(iid=DOWN), "The retrain lowered iid test accuracy"),
    (dict(iid=UP), "The retrain raised iid test accuracy"),
    (dict(recipe=FLAT, choice=UP), "Your choice of exemplars did better than a random pair"),
    (dict(recipe=FLAT, choice=DOWN), "A random pair did better than your choice of exemplars"),
    (dict(recipe=UP, choice=FLAT), "The method with a random pair did better than plain fine-tuning"),
    (dict(parent=UP), "Fine-tuning improved on the parent"),
    (dict(recipe=FLAT, choice=FLAT), "No evidence that the feedback changed the model beyond fine-tuning"),
])
def test_the_lead_follows_every_interval_that_excludes_zero(kw, lead):
    v = verdict(_rows(**kw))
    assert v.startswith(lead), v
    if not lead.startswith("No evidence"):
        assert not v.startswith("No evidence")


@pytest.mark.parametrize("recipe", [UP, DOWN])
@pytest.mark.parametrize("choice", [UP, DOWN, FLAT])
def test_recipe_and_choice_are_worded_by_their_signs(recipe, choice):
    v = verdict(_rows(effect=UP, recipe=recipe, choice=choice))
    assert v.startswith("The retrain reduced the shortcut: test_shifted accuracy +0.100 over plain fine-tuning")
    assert f"a random pair gave {'+' if recipe is UP else '−'}0.100" in v
    assert ("no evidence that your choice mattered" in v) == (choice is FLAT)
    assert ("your choice of exemplars mattered" in v) == (choice is UP)
    assert ("did better than your pair" in v) == (choice is DOWN)
    assert ("the gain comes from the recipe" in v) == (recipe is UP and choice is FLAT)


def test_zero_width_intervals_say_what_they_are():
    agree = _e(0.0, 0.0, 0.0, agree=True, n=120)
    v = verdict(_rows(effect=agree, recipe=agree, choice=agree, parent=agree, iid=agree))
    assert "the models agree on all 120 images" in v and "+0.000 to +0.000" not in v
    assert "no evidence that your choice mattered" in v
    assert "every resample gives +0.050" in verdict(_rows(effect=_e(0.05, 0.05, 0.05)))


def test_verdict_without_a_control_and_without_intervals():
    assert "without a control" in verdict({"test_shifted": {"effect": {"accuracy": UP}}}, vs="parent")
    assert direction(_e(0.1, None, None)) == "unknown"
    assert verdict({}) == "No held-out split to judge the retrain on."
    # maps that moved while accuracy did not are named
    rows = _rows()
    rows["test"]["effect"]["wr_mean"] = _e(-0.04, -0.06, -0.02)
    assert "WR −0.040" in verdict(rows)


def _runs(acc: float, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"correct": (rng.random(n) < acc).astype(float), "ar": rng.random(n), "ap": rng.random(n),
            "wr": np.full(n, np.nan)}


def test_summarise_reads_held_out_splits_only_and_pairs_groups_by_seed():
    splits = ("val", "test", "test_shifted")
    parent = {s: _runs(0.6, 200, 1) for s in splits}
    parent["train"] = _runs(0.0, 200, 9)  # a train split that would change every mean if it were read
    child = [{**{s: _runs(0.9, 200, 10 + k) for s in splits}, "train": _runs(0.0, 200, 9)} for k in range(3)]
    ctl = [{s: _runs(0.6, 200, 20 + k) for s in splits} for k in range(3)]
    rnd = [{s: _runs(0.85, 200, 30 + k) for s in splits} for k in range(3)]
    ev = summarise(parent, child, ctl, rnd)
    assert set(ev.splits) == set(ev.effect) == set(ev.effect_choice) == set(splits)
    assert ev.roles == {"val": "selection", "test": "evidence", "test_shifted": "evidence"}
    assert ev.splits["test"]["parent"]["accuracy"] == pytest.approx(parent["test"]["correct"].mean())
    assert ev.splits["test"]["child"]["wr_mean"] is None  # undefined stays undefined
    diffs = [child[k]["test"]["correct"].mean() - rnd[k]["test"]["correct"].mean() for k in range(3)]
    assert ev.effect_choice["test"]["accuracy"]["mean"] == pytest.approx(np.mean(diffs))
    rec = ev.effect_recipe["test_shifted"]["accuracy"]
    assert rec["low"] > 0 and rec["seeds"] == 3
    assert "two-level bootstrap: 3 seeds" in ev.interval
    assert ev.verdict.startswith("The retrain reduced the shortcut")
    one = summarise(parent, child[:1], ctl[:1], None)
    assert "covers the test images only" in one.interval and one.effect_choice == {}
    assert one.splits["val"]["random_control"] is None
    none = summarise(parent, child[:1], None)
    assert none.splits["val"]["control"] is None and none.effect_vs == "parent"


def test_the_verdict_never_reads_val():
    """A val effect that excludes 0 while test and test_shifted hold it: the sentence says no evidence."""
    splits = ("val", "test", "test_shifted")
    same = {s: _runs(0.7, 300, 5) for s in splits}
    child = [{**{s: same[s] for s in splits}, "val": _runs(1.0, 300, 6)}]
    ev = summarise(same, child, [same])
    assert ev.effect["val"]["accuracy"]["low"] > 0
    assert ev.verdict.startswith("No evidence"), ev.verdict


def _dropout_model() -> Classifier:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 4))
    return Classifier(blocks, head)


def test_training_and_reference_anchors_agree_for_a_model_with_dropout():
    m = _dropout_model()
    x = torch.rand(1, 1, 16, 16)
    ref = reference_anchor(m, Exemplar(x[0], 2))
    m.train()  # dropout active for the loss: not for the CAM
    for _ in range(3):
        feats, logits = C.features_logits(m, x)
        a = training_anchors(m, feats, logits, x, torch.tensor([2]))
        assert torch.nn.functional.cosine_similarity(a.detach(), ref).item() == pytest.approx(1.0, abs=1e-5)
    assert m.head[2].training  # the head's dropout is back on afterwards
    # what the old path did: a CAM through the dropout head differs from the reference
    feats = m.forward_features(x)
    torch.manual_seed(1)
    noisy = C.l2n(C.gradcam(feats, m.forward_head(feats), torch.tensor([2])) * C.image_at(x, feats.shape[-2:]))
    assert torch.nn.functional.cosine_similarity(noisy.detach(), ref).item() < 0.999
