"""The whole loop on imported networks (issue 21): a timm ViT and a torchvision ResNet, imported, go through the
gallery's explain job, the method comparison, the artefact probe and a counterfactual with the imported classifier
as the guide (tiny sizes)."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

SIZE = 32


def _me() -> int:
    """The acting user of these tests (a write never runs without one)."""
    from services.team.users import get_or_create_user

    return get_or_create_user("tester")


@pytest.fixture
def imported(tmp_path):
    import timm
    import torchvision

    from services.data.datasets import synth_dataset
    from services.models.model_import import import_model

    synth_dataset("t", n=48, size=SIZE, confounder=0.9, seed=0, user_id=None)
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, patch_size=8, num_classes=4)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "v.safetensors"))
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "r.pt")
    return {"vit": import_model("timm:vit_tiny_patch16_224", tmp_path / "v.safetensors", "t", user_id=_me(),
                                input_size=SIZE, normalize="0.5,0.25",
                                build_kwargs={"patch_size": 8}).model_id,
            "resnet": import_model("torchvision:resnet18", tmp_path / "r.pt", "t", user_id=_me(),
                                   input_size=SIZE).model_id}


@pytest.mark.parametrize("which", ["vit", "resnet"])
def test_explain_evaluate_probe_and_counterfactual_on_an_imported_network(imported, which):
    from services.counterfactuals.runs import run_counterfactuals
    from services.explanations.evaluation import evaluate_methods
    from services.explanations.explaining import run_explain
    from services.counterfactuals.probe import probe_artefact

    mid = imported[which]
    run = run_explain(mid, "gradcam", batch_size=16, user_id=None)
    assert run["summary"]["n"] == 48 and run["summary"]["ar_mean"] is not None
    methods = ["gradcam", "saliency", "guided_gradcam"]
    ev = evaluate_methods(mid, methods, limit=6, batch_size=6)
    assert math.isfinite(ev["methods"]["gradcam"]["del"]) and math.isfinite(ev["methods"]["saliency"]["ins"])
    if which == "vit":  # a token layer: guided GradCAM does not apply, and the comparison says so
        assert "does not apply" in ev["skipped"]["guided_gradcam"] and "guided_gradcam" not in ev["methods"]
    else:
        assert math.isfinite(ev["methods"]["guided_gradcam"]["ar"])
    probe = probe_artefact(mid, limit=8)
    assert probe.model_id == mid and probe.n == 8 and len(probe.positions) == 4  # the marker at each corner
    assert all(0 <= p["changed"] <= 1 for p in probe.positions)
    cf = run_counterfactuals([mid], 1, 0, ["adversarial"], options={"steps": 3}, user_id=None)
    assert cf["results"] and cf["results"][0]["model_id"] == mid
