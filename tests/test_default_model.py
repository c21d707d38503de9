"""The sidebar's default model after a retrain: the newest child, not one of the controls a retrain registers after
it (3 seeds × plain and random-pair control), nor the independent classifier B."""
from __future__ import annotations

from pages.common import INDEPENDENT_SUFFIX, default_model_index, model_label


def test_the_default_skips_controls_and_the_independent_classifier():
    models = [{"id": 1, "name": "demo-baseline", "config": {}},
              {"id": 2, "name": f"demo{INDEPENDENT_SUFFIX}", "config": {}},
              {"id": 3, "name": "demo-baseline-exbl_cf-s0", "config": {"retrain_id": 1, "role": "child"}},
              {"id": 4, "name": "demo-baseline-exbl_cf-control-s0", "config": {"control_of": 3}},
              {"id": 5, "name": "demo-baseline-exbl_cf-random-pair-s0", "config": {"control_of": 3}}]
    assert default_model_index(models) == 2
    ft = {"xbl": {"finetune": {"seed": 0}}, "retrain_id": 1, "role": "child"}
    models[2]["config"].update(ft, seed=0)
    models += [{"id": 6, "name": "demo-baseline-exbl_cf-s1", "config": {**ft, "seed": 1}},
               {"id": 7, "name": "demo-baseline-exbl_cf-control-s1", "config": {"control_of": 6}}]
    assert default_model_index(models) == 2  # seed 0's child: the model the retrain's result names
    assert default_model_index(models[:2]) == 0
    assert default_model_index([{"id": 9, "name": "x-control", "config": {"control_of": 8}}]) == 0


def test_the_default_has_an_explanation_run_and_controls_say_their_lineage():
    models = [{"id": 1, "name": "demo-baseline", "config": {}, "has_run": True},
              {"id": 3, "name": "demo-baseline-exbl_cf-s0", "parent_id": 1, "has_run": False,
               "config": {"retrain_id": 1, "role": "child", "seed": 0, "xbl": {"finetune": {"seed": 0}}}},
              {"id": 4, "name": "demo-baseline-exbl_cf-control-s0", "has_run": True,
               "config": {"control_of": 3, "role": "control"}}]
    assert default_model_index(models) == 0  # the child has no maps yet: the gallery opens on the baseline's
    models[1]["has_run"] = True
    assert default_model_index(models) == 1
    assert model_label(models[2]) == "#4 demo-baseline-exbl_cf-control-s0 · plain control of #3"
    assert model_label(models[1]) == "#3 demo-baseline-exbl_cf-s0 · retrained from #1"
    assert model_label(models[0]) == "#1 demo-baseline"
