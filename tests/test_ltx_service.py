"""LTX and method comparison as jobs: a tiny `ltx.train` registers an explainer for its classifier, and an
`evaluate` job scores GradCAM, IG and both LTX variants (AR, AP, POS, NEG, DEL, INS, seconds per image, curves)
and stores them on the classifier's row."""
from __future__ import annotations

import math

import pytest

from services.jobs import lifecycle as jobs
from services.explanations.ltx import find_explainer, method_kwargs
from services.models.registry import get_model
from services.team.users import get_or_create_user
from tests.helpers_explain import dataset_and_model


def _in(v, lo, hi) -> bool:
    return isinstance(v, float) and not math.isnan(v) and lo <= v <= hi


def test_ltx_train_then_evaluate_scores_and_stores_every_method():
    ds_id, mid = dataset_and_model(n=40, size=32)
    uid = get_or_create_user("tester")
    with pytest.raises(LookupError, match="ltx train"):
        method_kwargs(mid, "ltx")  # no explainer yet: the error names the command
    t = jobs.run_inline("ltx.train", {"model_id": mid, "epochs": 2, "batch_size": 8}, uid, echo=False)
    assert t["status"] == "succeeded", t["error"]
    hist = t["result"]["history"]
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    assert len(t["metrics"]) == 2  # one progress record per epoch
    ex = find_explainer(mid)
    assert ex["id"] == t["result"]["explainer_id"] and ex["kind"] == "ltx" and ex["target_model_id"] == mid
    assert ex["created_by"] == uid and ex["job_id"] == t["id"]

    methods = ["gradcam", "ig", "ltx_pretrained", "ltx"]
    e = jobs.run_inline("evaluate", {"model_id": mid, "methods": methods, "limit": 6, "batch_size": 4,
                                     "finetune_steps": 2}, uid, echo=False)
    assert e["status"] == "succeeded", e["error"]
    res = e["result"]
    names = ["gradcam", "integrated_gradients", "ltx_pretrained", "ltx"]
    n = res["n"]  # the test split of 40 synthetic images holds fewer than the limit
    assert list(res["methods"]) == names and 3 <= n <= 6 and res["split"] == "test"
    for name in names:
        r = res["methods"][name]
        for k in ("ar", "ap"):
            assert r[k] is None or _in(r[k], 0.0, 1.0), (name, k, r[k])
        for k in ("pos", "neg", "del", "ins"):
            assert _in(r[k], 0.0, 90.0), (name, k, r[k])
            assert _in(r["true"][k], 0.0, 90.0), (name, "true", k)
        assert r["seconds_per_image"] > 0 and r["n"] == n
        assert len(r["fractions"]) == 10 and set(r["curves"]) == {"predicted", "true"}
        assert all(len(c) == 10 for c in r["curves"]["predicted"].values())
        # at 0 % removed the POS and NEG curves read the same unperturbed images
        assert r["curves"]["predicted"]["pos"][0] == r["curves"]["predicted"]["neg"][0]
    assert res["methods"]["ltx"]["finetune_steps"] == 2 and res["methods"]["ltx_pretrained"]["finetune_steps"] == 0
    stored = get_model(mid)["metrics"]["methods"]
    assert set(stored) == set(names) and stored["gradcam"]["del"] == res["methods"]["gradcam"]["del"]
    assert stored["ltx"]["job_id"] == e["id"]

    # a second evaluation of one method replaces that method only
    e2 = jobs.run_inline("evaluate", {"model_id": mid, "methods": "gradcam", "limit": 2, "targets": "predicted"},
                         uid, echo=False)
    assert e2["status"] == "succeeded", e2["error"]
    stored = get_model(mid)["metrics"]["methods"]
    assert set(stored) == set(names) and stored["gradcam"]["n"] == 2 and stored["ltx"]["n"] == n
    assert "true" not in stored["gradcam"]

    # LTX is a gallery method like any other: an explain run of its maps, ranked by AR
    from services.explanations.explaining import explain_one, load_run, run_explain
    from services.models.registry import load_classifier

    run = run_explain(mid, "ltx_pretrained", ["test"], limit=5, user_id=uid)
    assert load_run(run["run_id"])["method"] == "ltx_pretrained" and 1 <= run["summary"]["n"] <= 5
    model, _ = load_classifier(mid)
    from services.data.datasets import load_arrays

    m, p = explain_one(model, load_arrays(ds_id).images[0], "ltx", model_id=mid)
    assert m.shape == (32, 32) and 0 <= m.min() <= m.max() <= 1 and abs(p.sum() - 1) < 1e-5


def test_evaluate_refuses_unknown_methods_and_non_classifiers():
    ds_id, mid = dataset_and_model(n=20, size=32)
    bad = jobs.run_inline("evaluate", {"model_id": mid, "methods": ["gradcam", "nope"]}, echo=False, user_id=None)
    assert bad["status"] == "failed" and "nope" in bad["error"]
    none = jobs.run_inline("ltx.train", {"model_id": 999}, echo=False, user_id=None)
    assert none["status"] == "failed" and "no model 999" in none["error"]


def test_ltx_names_the_papers_soft_masking_and_ltx_sampled_its_own_explainer():
    """docs/architecture.md, Definitions: `ltx` is the paper's soft masking; the sampled-mask variant is `ltx_sampled`,
    with an explainer of its own, never silently swapped in."""
    ds_id, mid = dataset_and_model(n=40, size=32)
    uid = get_or_create_user("tester")
    soft = jobs.run_inline("ltx.train", {"model_id": mid, "epochs": 1, "batch_size": 8}, uid, echo=False)
    assert soft["status"] == "succeeded", soft["error"]
    assert soft["result"]["masking"] == "soft"
    assert find_explainer(mid, "soft")["id"] == soft["result"]["explainer_id"]
    assert find_explainer(mid, "sample") is None
    with pytest.raises(LookupError, match="--masking sample"):
        method_kwargs(mid, "ltx_sampled")  # only a soft explainer exists: the variant asks for its own
    assert method_kwargs(mid, "ltx")[1]["explainer"].masking == "soft"
    d = jobs.run_inline("evaluate", {"model_id": mid, "limit": 2, "batch_size": 4, "finetune_steps": 1,
                                     "targets": "predicted"}, uid, echo=False)  # the default list
    assert d["status"] == "succeeded", d["error"]
    assert "ltx" in d["result"]["methods"] and list(d["result"]["skipped"]) == ["ltx_sampled"]
    assert "--masking sample" in d["result"]["skipped"]["ltx_sampled"]
    smp = jobs.run_inline("ltx.train", {"model_id": mid, "epochs": 1, "batch_size": 8, "masking": "sample"}, uid,
                          echo=False)
    assert smp["status"] == "succeeded", smp["error"]
    assert method_kwargs(mid, "ltx_sampled")[1]["explainer"].masking == "sample"
    assert method_kwargs(mid, "ltx")[1]["explainer"].masking == "soft"  # the newer sampled one does not replace it
    e = jobs.run_inline("evaluate", {"model_id": mid, "methods": "ltx,ltx_sampled", "limit": 3, "batch_size": 4,
                                     "finetune_steps": 1, "targets": "predicted"}, uid, echo=False)
    assert e["status"] == "succeeded", e["error"]
    labels = {k: v["label"] for k, v in e["result"]["methods"].items()}
    assert labels == {"ltx": "LTX (finetuned)", "ltx_sampled": "LTX (sampled masks, finetuned)"}
