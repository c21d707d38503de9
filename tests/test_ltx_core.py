"""LTX core: the explainer's loss falls during a tiny pretraining against a model that reads one region, and
per-instance finetuning picks each image's step by the training loss, never by a reported metric."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn

import core.metrics.faithfulness as faith
import core.metrics.localisation as loc
from core.explain import explain
from core.ltx import LTXExplainer, finetune, ltx_loss, pretrain
from core.ltx.train import evaluate_loss

S = 32
REGION = torch.zeros(S, S, dtype=torch.bool)
REGION[8:16, 8:16] = True  # 64 of 1024 pixels


class RegionModel(nn.Module):
    """Class 1 iff the mean of region R is bright: logit_1 = 12 · (mean_R − 0.5), logit_0 = 0."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(12.0))

    def forward(self, x):
        r = x[:, 0][:, REGION].mean(1)
        return torch.stack([torch.zeros_like(r), self.scale * (r - 0.5)], 1)


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 1, S, S, generator=g)
    y = torch.arange(n) % 2
    x[:, 0][:, REGION] = torch.where(y[:, None] == 1, 0.9, 0.1).expand(n, int(REGION.sum()))
    return x, y


def _explainer(seed: int = 0) -> LTXExplainer:
    torch.manual_seed(seed)
    return LTXExplainer(in_chans=1, width=8, depth=3, out_stride=4)


def test_pretraining_lowers_the_loss_and_learns_to_keep_the_region():
    torch.manual_seed(0)
    x, y = _images(48)
    model, e = RegionModel(), _explainer()
    before = evaluate_loss(e, model, x)
    hist = pretrain(e, model, x, epochs=8, batch_size=16, lr=3e-3, alpha=2.0, val_images=_images(16, 1)[0])
    after = evaluate_loss(e, model, x)
    assert len(hist) == 8 and {"loss", "ce", "mask_mean", "keep", "val_loss"} <= set(hist[0])
    assert hist[-1]["loss"] < hist[0]["loss"] and hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert after["loss"] < 0.7 * before["loss"]
    assert after["mask_mean"] < before["mask_mean"]
    assert after["keep"] >= 0.9  # the masked images still get the original prediction
    with torch.no_grad():
        m = e(x[y == 1])[:, 0]
    assert m[:, REGION].mean() > m[:, ~REGION].mean() + 0.2  # the mask keeps the region the model reads
    assert model.scale.requires_grad and model.scale.item() == 12.0  # frozen while training, restored after


def _boom(*a, **k):
    raise AssertionError("finetuning looked at a reported metric")


@pytest.mark.parametrize("masking", ["sample", "soft"])
def test_finetuning_chooses_each_step_by_the_training_loss_and_never_reads_a_metric(monkeypatch, masking):
    for mod in (faith, loc):
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__:
                monkeypatch.setattr(mod, name, _boom)
    params = set(inspect.signature(finetune).parameters)
    assert not params & {"labels", "label", "y", "mask", "masks", "lung", "metric"}
    x, _ = _images(6, 2)
    model, e = RegionModel(), _explainer(1)
    ref = {k: v.clone() for k, v in e.state_dict().items()}
    r = finetune(e, model, x, steps=6, lr=0.1, alpha=2.0, masking=masking)  # a large step: some losses rise again
    assert r.losses.shape == (6, 7) and r.masks.shape == (6, 1, S, S)
    assert torch.equal(r.best_step, r.losses.argmin(1))
    assert (r.best_step > 0).any() and (r.best_step < 6).any()  # neither always the first nor always the last
    with torch.no_grad():
        again = ltx_loss(model, x, r.masks, r.target, 2.0, r.noise).loss
    assert (r.noise is None) == (masking == "soft")
    assert torch.allclose(again, r.losses.min(1).values, atol=1e-5)  # the returned mask is the min-loss one
    assert all(torch.equal(v, ref[k]) for k, v in e.state_dict().items())  # the explainer is left unchanged
    # one image finetuned alone gets the same mask as in the batch (independent copies)
    alone = finetune(e, model, x[3:4], steps=6, lr=0.1, alpha=2.0, masking=masking)
    assert torch.equal(alone.best_step, r.best_step[3:4])
    assert torch.allclose(alone.masks, r.masks[3:4], atol=1e-4)
    # the registry method goes through the same path and gives maps in [0, 1]
    maps = explain(model, x, None, "ltx", explainer=e, finetune_steps=3, alpha=2.0, masking=masking)
    assert maps.shape == (6, S, S) and 0 <= maps.min() and maps.max() <= 1


def test_ltx_method_needs_an_explainer():
    with pytest.raises(ValueError, match="explainer"):
        explain(RegionModel(), _images(2)[0], None, "ltx")


def test_sampled_masks_are_binary_forward_unbiased_and_keep_the_gradient_of_m():
    from core.ltx import apply_mask, mask_noise

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 4, 4, generator=g)
    m = torch.rand(2, 1, 4, 4, generator=g).requires_grad_(True)
    u = mask_noise(m, "sample", g)
    y = apply_mask(x, m, noise=u)
    assert torch.allclose(y.detach(), x * (m.detach() > u).float(), atol=1e-6)  # kept or removed, never dimmed
    y.sum().backward()
    assert torch.allclose(m.grad, x)  # straight-through: the gradient of x ⊙ m
    draws = torch.stack([(m.detach() > mask_noise(m, "sample", g)).float() for _ in range(4000)]).mean(0)
    assert torch.allclose(draws, m.detach(), atol=0.04)  # E[m̃] = m
    assert mask_noise(m, "soft") is None
    shared = mask_noise(m, "sample", g, shared=True)
    assert torch.equal(shared[0], shared[1])
    with pytest.raises(ValueError, match="masking"):
        mask_noise(m, "hard")
