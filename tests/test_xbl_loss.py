"""The eXBL loss is well posed: differentiable GradCAM equals core.explain's, the triplet's gradient moves an
anchor toward p and away from q, the hinge switches off, and training lowers the share of active triplets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.explain import explaining
from core.explain.gradcam import gradcam as explain_gradcam
from core.models import create_model
from core.xbl import XBL_METHODS, Exemplar, TrainSet, get_method, list_methods, triplet
from core.xbl import cam as C
from core.xbl.exbl import Exbl


def _model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model("simple_cnn", num_classes=4, in_chans=1, width=8, **kw)


def test_differentiable_gradcam_equals_core_explain():
    m = _model().eval()
    x = torch.rand(5, 1, 32, 32)
    t = torch.tensor([0, 1, 2, 3, 1])
    with explaining(m):
        ref = explain_gradcam(m, x, t).raw
    feats, logits = C.features_logits(m, x)
    ours = C.gradcam(feats, logits, t, create_graph=True)
    assert ours.requires_grad  # the graph reaches the weights
    torch.testing.assert_close(ours.detach(), ref, rtol=1e-4, atol=1e-5)
    # and it is differentiable with respect to the parameters (double backprop through the head)
    ours.sum().backward()
    assert m.head[-1].weight.grad is not None and m.head[-1].weight.grad.abs().sum() > 0
    assert m.blocks[0][0].weight.grad.abs().sum() > 0


def test_triplet_gradient_moves_anchor_toward_p_and_away_from_q():
    torch.manual_seed(0)
    half = torch.tensor([1.0] * 8 + [0.0] * 8)
    p = C.l2n(torch.rand(1, 16) * half)
    q = C.l2n(torch.rand(1, 16) * (1 - half))
    v = torch.rand(8, 16, requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    a0 = C.l2n(v).detach()
    d_pos0, d_neg0 = (a0 - p).pow(2).sum(1), (a0 - q).pow(2).sum(1)
    loss, st = triplet(C.l2n(v), p, q, margin=0.5)
    assert float(st["active"]) > 0
    g = torch.autograd.grad(loss, v, retain_graph=True)[0]
    assert float(g.abs().sum()) > 0
    loss.backward()
    opt.step()
    a1 = C.l2n(v).detach()
    d_pos1, d_neg1 = (a1 - p).pow(2).sum(1), (a1 - q).pow(2).sum(1)
    on = (d_pos0 - d_neg0 + 0.5) > 0  # active triplets move; inactive ones get no gradient at all
    assert 0 < int(on.sum()) < len(on)
    assert bool((d_pos1[on] < d_pos0[on]).all()) and bool((d_neg1[on] > d_neg0[on]).all())
    torch.testing.assert_close(a1[~on], a0[~on])


def test_hinge_switches_off_and_is_not_linear_everywhere():
    p = C.l2n(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    q = C.l2n(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))  # ‖p − q‖² = 2
    at_p, st = triplet(p.clone(), p, q, margin=0.5)
    assert float(at_p) == 0.0 and float(st["active"]) == 0.0
    at_q, st = triplet(q.clone(), p, q, margin=0.5)
    assert float(at_q) == pytest.approx(2.5) and float(st["active"]) == 1.0
    # unit anchors keep the term bounded: it cannot be pushed below 0 or above ‖p−q‖² + m by scaling CAMs
    big = C.l2n(1000 * torch.rand(16, 4))
    assert float(triplet(big, p, q, 0.5)[0]) <= 2.5 + 1e-5


def test_training_lowers_active_share_and_moves_anchors():
    """Fine-tuning simple_cnn on hand-made images with only the triplet pushes CAM ⊙ x toward p (centre) and
    away from q (a corner): d+ falls, d− rises, the share of active triplets falls."""
    m = _model(1)
    torch.manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(32, 1, 32, 32)
    y = torch.randint(0, 4, (32,))
    h = w = 4  # the CAM resolution of simple_cnn at 32 px (1/8)
    centre = torch.zeros(h, w)
    centre[1:3, 1:3] = 1
    corner = torch.zeros(h, w)
    corner[0, 0] = 1
    meth = Exbl(lam=1.0, margin=1.0)
    meth.p_ref, meth.q_ref = C.l2n(centre[None]), C.l2n(corner[None])

    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    stats = []
    for step in range(40):
        feats, logits = C.features_logits(m, x)
        cam = C.gradcam(feats, logits, y, create_graph=True)
        a = C.l2n(cam * C.image_at(x, cam.shape[-2:]))
        loss, st = triplet(a, meth.p_ref, meth.q_ref, 1.0)
        stats.append({k: float(v) for k, v in st.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, last = stats[0], stats[-1]
    assert first["active"] > 0.5
    assert last["active"] < first["active"]
    assert last["d_pos"] < first["d_pos"] and last["d_neg"] > first["d_neg"]


def test_registry_and_settings():
    assert {"exbl", "penalty_mask", "counterexamples", "rrr"} <= set(list_methods())
    for name in XBL_METHODS:
        assert get_method(name).name == name
    st = get_method("exbl", lam=3.0, margin=None).settings
    assert st["lam"] == 3.0 and st["margin"] == get_method("exbl").settings["margin"]
    with pytest.raises(ValueError, match="no setting"):
        get_method("exbl", tau=0.3)
    with pytest.raises(ValueError, match="unknown XBL method"):
        get_method("nope")


@pytest.mark.parametrize("name", list(XBL_METHODS))
def test_every_method_gives_a_finite_loss_with_gradients_and_common_stats(name):
    m = _model(2)
    torch.manual_seed(2)
    x8 = (torch.rand(12, 1, 32, 32) * 255).to(torch.uint8)
    y = torch.arange(12) % 4
    lung = torch.zeros(12, 32, 32, dtype=torch.uint8)
    lung[:, 8:24, 6:26] = 1
    train = TrainSet(x8, y, lung)
    good = Exemplar(x8[0].float() / 255, 0)
    bad = Exemplar(x8[1].float() / 255, 1)
    meth = get_method(name)
    m.eval()
    meth.prepare(m, good, bad, train)
    m.train()
    idx = torch.arange(8)
    loss, st = meth.loss(m, x8[idx].float() / 255, y[idx], idx)
    assert torch.isfinite(loss)
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None) > 0
    for k in ("ce", "expl", "active", "d_pos", "d_neg"):
        assert k in st and torch.isfinite(torch.as_tensor(st[k]))
    with torch.no_grad():
        ce = float(F.cross_entropy(m(x8[idx].float() / 255), y[idx]))
    assert float(st["ce"]) == pytest.approx(ce, abs=0.5)
