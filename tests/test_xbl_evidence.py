"""Evidence of a retrain (core.xbl.evidence): the verdict sentence from hand-made intervals (improved / no
evidence / worse), paired bootstrap and across-seed intervals, held-out splits only; and eXBL's training and
reference anchors agree for a model with dropout (one forward mode for the CAM)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.models.base import Classifier
from core.xbl import Exemplar, reference_anchor, training_anchors
from core.xbl import cam as C
from core.xbl.evidence import boot_interval, direction, seed_interval, summarise, verdict


def _e(mean, low, high):
    return {"mean": mean, "low": low, "high": high}


def test_verdict_improved_names_the_interval_and_the_iid_split():
    eff = {"test_shifted": {"accuracy": _e(0.14, 0.09, 0.19)}, "test": {"accuracy": _e(-0.004, -0.01, 0.006)}}
    v = verdict(eff)
    assert v.startswith("The feedback reduced the shortcut: test_shifted accuracy +0.140 over the control")
    assert "95 % CI +0.090 to +0.190" in v and "iid test accuracy unchanged (−0.004" in v


def test_verdict_no_evidence_and_worse():
    flat = {"test_shifted": {"accuracy": _e(0.01, -0.02, 0.04)}, "test": {"accuracy": _e(0.0, -0.01, 0.01)}}
    assert verdict(flat).startswith("No evidence that the feedback changed the model beyond fine-tuning")
    worse = {"test_shifted": {"accuracy": _e(-0.1, -0.15, -0.05)}, "test": {"accuracy": _e(-0.05, -0.08, -0.02)}}
    v = verdict(worse)
    assert v.startswith("The feedback made the model worse") and "iid test accuracy lower" in v
    # maps that moved while accuracy did not are named
    flat["test"]["wr_mean"] = _e(-0.04, -0.06, -0.02)
    assert "WR −0.040" in verdict(flat)
    # without a control the sentence says so
    assert "without a control" in verdict({"test_shifted": {"accuracy": _e(0.2, 0.1, 0.3)}}, vs="parent")
    assert direction(_e(0.1, None, None)) == "unknown"


def test_paired_bootstrap_and_seed_intervals():
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.8).astype(float)
    b = (rng.random(400) < 0.6).astype(float)
    iv = boot_interval(a, b)
    assert iv["low"] < iv["mean"] < iv["high"] and iv["low"] > 0
    assert iv["mean"] == pytest.approx(a.mean() - b.mean())
    same = boot_interval(a, a)
    assert same["mean"] == same["low"] == same["high"] == 0.0  # paired: the same images both sides
    nan = boot_interval(np.full(5, np.nan))
    assert nan["mean"] is None
    s = seed_interval([0.1, 0.12, 0.14])
    assert s["mean"] == pytest.approx(0.12) and s["low"] == pytest.approx(0.12 - 4.303 * 0.02 / np.sqrt(3), abs=1e-6)


def _runs(acc: float, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"correct": (rng.random(n) < acc).astype(float), "ar": rng.random(n), "ap": rng.random(n),
            "wr": np.full(n, np.nan)}


def test_summarise_reads_held_out_splits_only_and_switches_to_seeds_at_three():
    parent = {s: _runs(0.6, 200, 1) for s in ("val", "test", "test_shifted")}
    parent["train"] = _runs(0.0, 200, 9)  # a train split that would change every mean if it were read
    child = [{**{s: _runs(0.9, 200, 10 + k) for s in ("val", "test", "test_shifted")},
              "train": _runs(0.0, 200, 9)} for k in range(3)]
    ctl = [{s: _runs(0.6, 200, 20 + k) for s in ("val", "test", "test_shifted")} for k in range(3)]
    one = summarise(parent, child[:1], ctl[:1])
    assert set(one.splits) == set(one.effect) == {"val", "test", "test_shifted"}
    assert one.splits["test"]["parent"]["accuracy"] == pytest.approx(parent["test"]["correct"].mean())
    assert one.splits["test"]["child"]["wr_mean"] is None  # undefined stays undefined
    assert "bootstrap" in one.interval and one.effect_vs == "control"
    assert one.verdict.startswith("The feedback reduced the shortcut")
    three = summarise(parent, child, ctl)
    assert "across 3 seeds" in three.interval
    diffs = [child[k]["test"]["correct"].mean() - ctl[k]["test"]["correct"].mean() for k in range(3)]
    assert three.effect["test"]["accuracy"]["mean"] == pytest.approx(np.mean(diffs))
    none = summarise(parent, child[:1], None)
    assert none.splits["val"]["control"] is None and none.effect_vs == "parent"


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
