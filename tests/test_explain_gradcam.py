"""Our batched GradCAM equals a direct torch computation and Captum's LayerGradCam; the registry's call shape."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.explain import EXPLAINERS, explain, explaining, upsample_normalise
from core.explain.gradcam import gradcam, gradcam_captum
from core.models import create_model


class Tiny(nn.Module):
    """A small network with the classifier interface (forward_features / forward_head / feature_layer)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.fc = nn.Linear(6, 3)

    @property
    def feature_layer(self):
        return self.c2

    def forward_features(self, x):
        return self.c2(torch.relu(self.c1(x)))

    def forward_head(self, f):
        return self.fc(torch.relu(f).mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def direct_gradcam(model, x, target):
    """GradCAM written out by hand: A = layer output, α_k = mean ∂y_c/∂A_k, E = norm(up(ReLU(Σ α_k A_k)))."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i: i + 1]
        a = model.forward_features(xi)
        a.retain_grad()
        y = model.forward_head(a)[0, int(target[i])]
        model.zero_grad()
        y.backward()
        cam = torch.relu((a.grad.mean((2, 3), keepdim=True) * a).sum(1))
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        out.append(cam / cam.max() if cam.max() > 0 else torch.zeros_like(cam))
    return torch.stack(out).detach()


def test_gradcam_equals_direct_torch_on_a_small_network():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.rand(6, 1, 16, 16)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    ours = explain(model, x, target, "gradcam")
    ref = direct_gradcam(model, x, target)
    assert ours.shape == (6, 16, 16)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert ours.amax((1, 2)).allclose(torch.ones(6)) or (ours.amax((1, 2)) == 0).any()


@pytest.mark.parametrize("arch", ["simple_cnn", "mobilenet_v2"])
def test_fast_path_equals_captum_layergradcam(arch):
    torch.manual_seed(1)
    model = create_model(arch, width=8) if arch == "simple_cnn" else create_model(arch, width_mult=0.25)
    x = torch.rand(5, 1, 32, 32)
    with explaining(model):
        fast = gradcam(model, x, None)
        cap = gradcam_captum(model, x, None)
    assert torch.equal(fast.logits.argmax(1), cap.logits.argmax(1))
    scale = cap.raw.abs().max().clamp_min(1e-30)
    assert torch.allclose(fast.raw / scale, cap.raw / scale, atol=1e-5)
    assert torch.allclose(upsample_normalise(fast.raw, 32), upsample_normalise(cap.raw, 32), atol=1e-4)


def test_explaining_restores_mode_grads_and_inplace():
    model = create_model("simple_cnn", width=4)
    model.train()
    model.blocks[0][0].weight.requires_grad_(False)  # a frozen block stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    explain(model, torch.rand(2, 1, 32, 32), "predicted")
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert all(p.grad is None for p in model.parameters())


def test_targets_predicted_int_and_per_image():
    torch.manual_seed(2)
    model = create_model("simple_cnn", width=4)
    x = torch.rand(3, 1, 32, 32)
    maps, logits = explain(model, x, None, return_logits=True)
    pred = logits.argmax(1)
    assert torch.allclose(maps, explain(model, x, pred))
    assert torch.allclose(explain(model, x, 2), explain(model, x, [2, 2, 2]))
    with pytest.raises(ValueError):
        explain(model, x, [0, 1])
    with pytest.raises(ValueError):
        explain(model, x, None, "nope")


@pytest.mark.parametrize("method", list(EXPLAINERS))
def test_every_method_has_the_same_call_shape(method):
    torch.manual_seed(3)
    model = create_model("simple_cnn", width=4)
    x = torch.rand(2, 1, 32, 32)
    kw = {"n_steps": 4} if method == "integrated_gradients" else {}
    if method == "ltx":  # a learned method: an (untrained) explainer, two finetuning steps
        from core.ltx.explainer import LTXExplainer

        kw = {"explainer": LTXExplainer(), "finetune_steps": 2}
    maps, logits = explain(model, x, [1, 3], method, size=16, return_logits=True, **kw)
    assert maps.shape == (2, 16, 16) and logits.shape == (2, 4)
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.isfinite(maps).all()


def test_all_zero_map_stays_zero():
    raw = torch.zeros(2, 4, 4)
    raw[1, 1, 1] = 3.0
    e = upsample_normalise(raw, 8)
    assert e[0].eq(0).all() and e[1].max() == 1.0
