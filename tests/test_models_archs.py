"""Architectures: features/head split, GradCAM layer, freezing, local pretrained weights (no downloads), and
refusal of pickled objects."""
from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from core.models import create_model, freeze_blocks, list_archs
from core.models.checkpoint import load_state_dict_file
from core.train.pretrained import load_pretrained

ARCHS = ["simple_cnn", "mobilenet_v2", "resnet18"]


def test_registry_lists_the_three_architectures():
    assert set(ARCHS) <= set(list_archs())


@pytest.mark.parametrize("arch", ARCHS)
def test_features_head_split_and_feature_layer(arch):
    torch.manual_seed(0)
    m = create_model(arch, num_classes=4, in_chans=1).eval()
    x = torch.rand(2, 1, 64, 64)
    f = m.forward_features(x)
    assert f.ndim == 4 and f.shape[0] == 2 and f.shape[-1] >= 4  # a usable GradCAM map at 64 px
    assert torch.allclose(m.forward_head(f), m(x))
    assert m(x).shape == (2, 4)
    seen = {}
    h = m.feature_layer.register_forward_hook(lambda mod, i, o: seen.setdefault("o", o))
    m(x)
    h.remove()
    assert torch.equal(seen["o"], f)
    assert m.feature_layer is m.blocks[-1]


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_freeze_blocks(arch):
    m = create_model(arch)
    freeze_blocks(m, 2)
    assert all(not p.requires_grad for b in list(m.blocks)[:2] for p in b.parameters())
    assert all(p.requires_grad for p in m.blocks[2].parameters())
    assert all(p.requires_grad for p in m.head.parameters())


@pytest.mark.parametrize("arch,tv", [("mobilenet_v2", torchvision.models.mobilenet_v2),
                                     ("resnet18", torchvision.models.resnet18)])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_pretrained_torchvision_state_dict_loads_with_grayscale_conv(tmp_path, arch, tv, fmt):
    torch.manual_seed(1)
    ref = tv(weights=None)  # the layout of torchvision's ImageNet weights: RGB input, 1000 classes
    sd = ref.state_dict()
    f = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(sd, f)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(f))
    m = create_model(arch)
    rep = load_pretrained(m, f)
    first = "features.0.0.weight" if arch == "mobilenet_v2" else "conv1.weight"
    assert torch.allclose(m.blocks[0][0].weight, sd[first].sum(1, keepdim=True))
    assert rep["adapted"] and rep["loaded"] > 50
    assert any("(shape" in s for s in rep["skipped"])  # the 1000-class head is not forced on a 4-class model
    last = "features.18.0.weight" if arch == "mobilenet_v2" else "layer4.1.conv2.weight"
    own = dict(m.state_dict())
    key = "blocks.18.0.weight" if arch == "mobilenet_v2" else "blocks.4.1.conv2.weight"
    assert torch.equal(own[key], sd[last])


def test_pretrained_file_that_fits_nothing_is_refused(tmp_path):
    f = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(f))
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained(create_model("simple_cnn"), f)


class Payload:
    """A pickled object whose unpickling would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.pth"
    with open(f, "wb") as fh:
        pickle.dump({"state_dict": {"w": Payload(str(marker))}}, fh)
    with pytest.raises(ValueError, match="not a plain weights file"):
        load_state_dict_file(f)
    with pytest.raises(ValueError, match="not a plain weights file"):
        load_pretrained(create_model("simple_cnn"), f)
    assert not marker.exists()  # the payload never ran
    g = tmp_path / "obj.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, g)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match="weights"):
        load_state_dict_file(g)
