"""The architecture matrix of issue 21: 16 torchvision / timm networks at 64 px with random weights, made outside
Exemplar as a user would, each imported (strict keys, val / test / test_shifted figures), given a target layer by the
rule, explained with GradCAM equal to pytorch-grad-cam on the same layer (Pearson ≥ 0.999 a map), trained one eXBL
step whose explanation term reaches the weights before the target layer, and exported to a .pt2 program that
reloads with max |Δlogit| ≤ 1e-4. A network the rule cannot handle (no spatial layer) is refused naming
--target-layer, and nothing is registered.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.explain import explain
from core.models.target import TargetRefused, to_grid
from core.xbl import Exemplar, cam as C, reference_anchor, training_anchors, triplet

SIZE = 64


def _me() -> int:
    """The acting user of these tests (a write never runs without one)."""
    from services.team.users import get_or_create_user

    return get_or_create_user("tester")
# network → the layer the rule must choose (what pytorch-grad-cam's docs advise for that family)
MATRIX = {
    "torchvision:resnet50": "layer4",
    "torchvision:resnet101": "layer4",
    "torchvision:densenet121": "features",
    "torchvision:mobilenet_v2": "features",
    "torchvision:efficientnet_b0": "features",
    "torchvision:convnext_tiny": "features",
    "torchvision:regnet_y_400mf": "trunk_output",
    "torchvision:vit_b_16": "encoder.layers.encoder_layer_11.ln_1",
    "torchvision:swin_t": "permute",
    "timm:resnet18d": "layer4",
    "timm:efficientnet_b0": "bn2",
    "timm:vit_tiny_patch16_224": "blocks.11.norm1",
    "timm:deit_tiny_patch16_224": "blocks.11.norm1",
    "timm:swin_tiny_patch4_window7_224": "norm",
    "timm:convnext_nano": "stages",
    "timm:mobilevitv2_050": "stages",
    "python:tests.byom_nets:dict_net": "body",
}
REFUSED = {"python:tests.byom_nets:mlp": "no spatial layer (a multilayer perceptron on the pixels)"}


def outside_network(arch: str) -> nn.Module:
    """The network as the user's own code would build it (random weights; a zero-initialised head made random,
    as any trained head is)."""
    import timm
    import torchvision

    from tests import byom_nets

    source, name = arch.split(":", 1)
    torch.manual_seed(0)
    if source == "torchvision":
        kw = {"image_size": SIZE} if name.startswith("vit_") else {}
        net = torchvision.models.get_model(name, weights=None, num_classes=4, **kw)
    elif source == "timm":
        try:
            net = timm.create_model(name, pretrained=False, num_classes=4, img_size=SIZE)
        except TypeError:
            net = timm.create_model(name, pretrained=False, num_classes=4)
    else:
        net = getattr(byom_nets, name.split(":")[1])(num_classes=4)
    for m in net.modules():
        if isinstance(m, nn.Linear) and not m.weight.detach().any():
            nn.init.normal_(m.weight, std=0.05)
    return net.eval()


@pytest.fixture
def synth():
    from services.data.datasets import synth_dataset

    return synth_dataset("m", n=40, size=SIZE, confounder=0.9, seed=0, user_id=None)["dataset_id"]


def _save(net: nn.Module, path, arch: str):
    """Half the matrix as safetensors, half as a torch state dict (read weights-only)."""
    if sorted([*MATRIX, *REFUSED]).index(arch) % 2 == 0:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path.with_suffix(".safetensors")))
        return path.with_suffix(".safetensors")
    torch.save(net.state_dict(), path.with_suffix(".pt"))
    return path.with_suffix(".pt")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-8 or b.std() < 1e-8:
        return float("nan")
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _gradcam_agrees(model, x):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    spec = model.target
    maps, logits = explain(model, x, method="gradcam", return_logits=True)
    aspect = x.shape[-1] / x.shape[-2]
    layer = model.get_submodule(spec.name)
    oracle = GradCAM(model=model, target_layers=[layer],
                     reshape_transform=None if spec.layout == "nchw" else
                     (lambda o: to_grid(o, spec.layout, spec.prefix, aspect)))
    # pytorch-grad-cam keeps the layer's output by reference (.cpu().detach() shares storage on the CPU), so an
    # in-place op after the layer (DenseNet's F.relu(inplace=True) after `features`) would rewrite what it reads:
    # the layers after it get a copy, as in core.models.target
    guard = layer.register_forward_hook(lambda _m, _i, o: o.clone())
    try:
        ref = oracle(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in logits.argmax(1)])
    finally:
        guard.remove()
        oracle.activations_and_grads.release()
    rs = [_pearson(a, b) for a, b in zip(maps.numpy(), ref)]
    defined = [r for r in rs if r == r]
    return rs, defined


def _exbl_step(model, x, y):
    """One eXBL step (reference loss): returns whether the map's gradient (create_graph) reached a weight before
    the target layer, and whether the step changed the weights."""
    model.eval()
    p = reference_anchor(model, Exemplar(x[0], int(y[0])))
    q = reference_anchor(model, Exemplar(x[1], int(y[1])))
    model.train()
    first = next(p for p in model.parameters() if p.requires_grad)
    before = first.detach().clone()
    feats, logits = C.features_logits(model, x)
    a = training_anchors(model, feats, logits, x, y)
    term, _ = triplet(a, p, q, 4.0)  # margin 4: every hinge active (d+ − d− ≥ −4 for unit vectors)
    # the map before its ReLU (a 2 × 2 map of a random network may be all negative for a few images)
    raw = C.gradcam(feats, logits, y, create_graph=True, relu=False)
    (g,) = torch.autograd.grad(raw.pow(2).sum(), first, retain_graph=True, allow_unused=True)
    loss = F.cross_entropy(logits, y) + term
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()
    return g is not None and float(g.abs().sum()) > 0, not torch.equal(before, first.detach())


@pytest.mark.parametrize("arch", list(MATRIX))
def test_network_imports_explains_retrains_and_exports(arch, synth, tmp_path):
    from core.models.export import portable_input, reference_logits, reload_logits, write_pt2
    from services.data.datasets import load_arrays
    from services.models.model_import import import_model
    from services.models.registry import load_classifier

    weights = _save(outside_network(arch), tmp_path / "w", arch)
    res = import_model(arch, weights, synth, user_id=_me(), input_size=SIZE, channels=3, normalize="imagenet")
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert res.target_layer == MATRIX[arch]
    assert set(res.metrics) == {"val", "test", "test_shifted"}
    assert all(0 <= m["accuracy"] <= 1 and 0 <= m["ece"] <= 1 for m in res.metrics.values())

    model, _row = load_classifier(res.model_id, "cpu")
    arrays = load_arrays(synth)
    idx = arrays.split_index("test")[:6]
    x = torch.from_numpy(arrays.images[idx]).float().div(255.0)[:, None]
    rs, defined = _gradcam_agrees(model, x)
    assert len(defined) >= len(rs) // 2, f"{arch}: too many constant maps {rs}"
    assert min(defined) >= 0.999, f"{arch}: GradCAM vs pytorch-grad-cam Pearson {rs}"

    reached, changed = _exbl_step(model, x[:4], torch.as_tensor(arrays.labels[idx[:4]]).long())
    assert reached, f"{arch}: the eXBL term did not reach the weights before the target layer"
    assert changed

    path = write_pt2(model, tmp_path / "m.pt2", SIZE)
    xp = portable_input(model, torch.rand(5, 1, SIZE, SIZE), SIZE)
    diff = float((reload_logits("pt2", path, None, xp) - reference_logits(model, xp)).abs().max())
    assert diff <= 1e-4, f"{arch}: .pt2 max |Δlogit| {diff}"


@pytest.mark.parametrize("arch", list(REFUSED))
def test_network_the_rule_cannot_handle_is_refused_naming_target_layer(arch, synth, tmp_path):
    from services.models.model_import import import_model
    from services.models.registry import find_model

    weights = _save(outside_network(arch), tmp_path / "w", arch)
    with pytest.raises(TargetRefused, match="--target-layer"):
        import_model(arch, weights, synth, user_id=_me(), input_size=SIZE, channels=3)
    assert find_model("m-mlp") is None
