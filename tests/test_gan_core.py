"""The AttGAN-like GAN and the GCI search on a tiny toy: reconstruction, attribute edits, search, attribute text."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.counterfactual import generate
from core.counterfactual.gci import GCIConfig, describe_change, gci_search
from core.generative.gan import (AttrGroup, AttrSpec, GANBundle, GANTrainConfig, build_gan, count_params, gan_config,
                                 load_gan, reconstruct, sample_grid, synthcxr_rows, synthcxr_spec, train_gan)
from core.models import create_model
from core.models.checkpoint import save_checkpoint
from core.train.classifier import recalibrate_batchnorm
from tests.helpers_gan import SPEC, toy_images


@pytest.fixture(scope="module")
def toy():
    """A GAN and a classifier trained for a few seconds on 128 toy images (32×32, two classes, a tag flag)."""
    torch.manual_seed(0)
    imgs, y, attrs = toy_images(128)
    G, D = build_gan(SPEC, size=32, width=16)
    hist = train_gan(G, D, imgs, attrs, SPEC, GANTrainConfig(steps=150, batch_size=32, log_every=50))
    x = torch.tensor(imgs[:, None] / 255.0, dtype=torch.float32)
    clf = create_model("simple_cnn", num_classes=2, width=8)
    opt = torch.optim.Adam(clf.parameters(), 1e-2)
    for _ in range(30):
        clf.train()
        loss = F.cross_entropy(clf(x), torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    recalibrate_batchnorm(clf, x)  # eval-mode BatchNorm statistics of the weights the loop ended with
    return {"G": G, "D": D, "imgs": imgs, "x": x, "y": y, "attrs": attrs, "clf": clf, "hist": hist}


def test_training_logs_every_loss(toy):
    h = toy["hist"]
    assert [m["step"] for m in h] == [50, 100, 150]
    for k in ("d_adv", "d_cls", "g_adv", "g_cls", "rec_l1", "d_attr_acc", "g_attr_acc"):
        assert all(np.isfinite(m[k]) for m in h), k
    assert h[-1]["rec_l1"] < h[0]["rec_l1"]


def test_reconstruction_beats_the_mean_image(toy):
    x = toy["imgs"][:, None] / 255.0
    rec = reconstruct(toy["G"], toy["imgs"], toy["attrs"])
    rec_l1 = np.abs(rec - x).mean()
    baseline = np.abs(x - x.mean(0, keepdims=True)).mean()
    assert rec_l1 < 0.7 * baseline, (rec_l1, baseline)


def test_flipping_the_class_attribute_changes_the_classifier_output(toy):
    y, clf, G = toy["y"], toy["clf"], toy["G"]
    assert (clf(toy["x"]).argmax(1).numpy() == y).mean() > 0.95  # the classifier itself is right
    other = 1 - y
    flipped = toy["attrs"].copy()
    flipped[:, SPEC.slices["class"]] = np.eye(2, dtype=np.float32)[other]
    with torch.no_grad():
        kept = clf(G(toy["x"], torch.tensor(toy["attrs"]))).argmax(1).numpy()
        edited = clf(G(toy["x"], torch.tensor(flipped))).argmax(1).numpy()
    assert (kept == y).mean() > 0.9
    assert (edited == other).mean() > 0.8


@pytest.mark.parametrize("mode", ["attributes", "latent"])
def test_the_search_reduces_its_objective(toy, mode):
    # Fixed λ and no early stop: the objective itself must go down.
    cfg = GCIConfig(mode=mode, lam=0.05, lr=0.05, max_steps=40, patience=10_000, lam_growth=1.0)
    idx = np.arange(16)
    res = gci_search(toy["G"], toy["clf"], toy["x"][idx], 1 - toy["y"][idx], toy["attrs"][idx], SPEC, cfg)
    obj = res.trajectory["objective"]
    assert obj.shape == (40, 16)
    assert (obj[-1] < obj[0]).mean() >= 0.9
    assert obj[-1].mean() < 0.8 * obj[0].mean()
    assert res.trajectory["target_prob"][-1].mean() > res.trajectory["target_prob"][0].mean()


@pytest.mark.parametrize("mode", ["attributes", "latent"])
def test_the_search_flips_and_stops_early(toy, mode):
    idx = np.arange(24)
    res = gci_search(toy["G"], toy["clf"], toy["x"][idx], 1 - toy["y"][idx], toy["attrs"][idx], SPEC,
                     GCIConfig(mode=mode, lr=0.3 if mode == "attributes" else 0.1))
    assert res.flipped.mean() >= 0.8
    assert (res.steps[res.flipped] < 200).all()
    assert (res.generator_passes == res.steps).all()
    assert np.allclose(res.l1, np.abs(res.images - toy["x"][idx].numpy()).reshape(24, -1).mean(1))
    # the result's probabilities are the classifier's on the returned image
    with torch.no_grad():
        p = toy["clf"](torch.as_tensor(res.images)).softmax(1).numpy()
    assert np.allclose(p, res.probs, atol=1e-4)
    if mode == "latent":
        assert (res.latent_norm[res.flipped] > 0).all() and np.allclose(res.attrs, res.attrs0)


def test_the_attribute_text_matches_the_vector_change(toy):
    spec = AttrSpec([AttrGroup("class", "onehot", ["Normal", "COVID"]),
                     AttrGroup("marker", "onehot", ["left-upper", "right-upper", "left-lower", "right-lower"]),
                     AttrGroup("opacity", "flag"), AttrGroup("lesion_left", "flag")])
    a0 = spec.encode([{"class": "Normal", "marker": "left-upper", "opacity": 0.1, "lesion_left": 1.0}])[0]
    a1 = a0.copy()
    a1[spec.slices["marker"]] = [0.2, 0.0, 0.1, 0.7]
    a1[spec.slices["opacity"]] = 0.9
    a1[spec.slices["lesion_left"]] = 0.97  # below the reporting threshold
    assert describe_change(spec, a0, a1) == ["marker: left-upper → right-lower", "opacity: +0.80"]
    a2 = a0.copy()
    a2[spec.slices["class"]] = [0.6, 0.4]
    assert describe_change(spec, a0, a2) == ["generator's class input: Normal 1.00 → 0.60"]
    assert describe_change(spec, a0, a0) == []
    # and every GCI result's words agree with its own vectors
    idx = np.arange(12)
    res = gci_search(toy["G"], toy["clf"], toy["x"][idx], 1 - toy["y"][idx], toy["attrs"][idx], SPEC,
                     GCIConfig(lr=0.3))
    for b in range(12):
        c0, c1 = res.attrs0[b, :2].argmax(), res.attrs[b, :2].argmax()
        words = res.attributes_changed[b]
        assert words == describe_change(SPEC, res.attrs0[b], res.attrs[b])
        if c0 != c1:
            assert f"generator's class input: {'AB'[c0]} → {'AB'[c1]}" in words


def test_spec_roundtrip_and_synthcxr_rows():
    spec = synthcxr_spec(["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"])
    assert spec.dim == 4 + 4 + 3
    rows = synthcxr_rows(["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"], [2, 0],
                         [{"marker_corner": "bottom_right", "lesion_left": 0, "lesion_right": 0, "severity": 0.0},
                          {"marker_corner": "top_left", "lesion_left": 1, "lesion_right": 1, "severity": 1.0}])
    a = spec.encode(rows)
    assert spec.decode(a[0]) == {"class": "Normal", "marker": "bottom_right", "lesion_left": 0.0,
                                 "lesion_right": 0.0, "opacity": 0.0}
    assert spec.decode(a[1])["opacity"] == pytest.approx(0.8)
    assert AttrSpec.from_json(spec.to_json()).to_json() == spec.to_json()
    with pytest.raises(ValueError):
        spec.encode([{**rows[0], "marker": "middle"}])


def test_the_64px_model_fits_the_asset_budget():
    spec = synthcxr_spec(["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"])
    G, D = build_gan(spec, size=64)
    assert (count_params(G) + count_params(D)) * 4 <= 15 * 2 ** 20
    x = torch.rand(2, 1, 64, 64)
    out = G(x, torch.tensor(spec.encode(synthcxr_rows(spec["class"].values, [0, 1], [
        {"marker_corner": "top_left", "lesion_left": 1, "lesion_right": 0, "severity": 0.7}] * 2))))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    adv, cls = D(x)
    assert adv.shape == (2,) and cls.shape == (2, spec.dim)


def test_sample_grid_has_every_attribute_edit(toy):
    grid, labels = sample_grid(toy["G"], toy["imgs"][:3], toy["attrs"][:3], SPEC)
    assert labels == ["original", "reconstruction", "class=A", "class=B", "tag toggled"]
    assert grid.dtype == np.uint8 and grid.shape == (3 * 32, 5 * 32)
    assert np.array_equal(grid[:32, :32], toy["imgs"][0])


def test_checkpoint_roundtrip_and_attribute_estimate(toy, tmp_path):
    b = GANBundle(toy["G"], toy["D"], SPEC, gan_config(toy["G"], SPEC, toy["D"]))
    path = save_checkpoint(b.modules(), b.config, tmp_path / "gan.safetensors")
    b2 = load_gan(path)
    a = torch.tensor(toy["attrs"][:8])
    with torch.no_grad():
        assert torch.allclose(b.G(toy["x"][:8], a), b2.G(toy["x"][:8], a), atol=1e-6)
    est = b2.estimate_attributes(toy["x"])
    assert (est[:, :2].argmax(1) == toy["attrs"][:, :2].argmax(1)).mean() > 0.9  # D's head reads the class


def test_the_registered_gan_method(toy):
    b = GANBundle(toy["G"], toy["D"], SPEC, gan_config(toy["G"], SPEC, toy["D"]))
    x, tgt = toy["x"][:6], torch.tensor(1 - toy["y"][:6])
    out = generate("gan", toy["clf"], x, tgt, generator=b, attributes=toy["attrs"][:6], lr=0.3, max_steps=60)
    assert out.images.shape == x.shape
    assert torch.equal(out.images, torch.round(out.images * 255) / 255)  # 8-bit quantised
    ps = out.config["per_sample"]
    assert len(ps["attributes_changed"]) == 6 and ps["attributes_source"] == "known"
    assert out.prob_curve.shape[0] == 6 and out.trajectory.shape[:2][0] == 6
    with torch.no_grad():
        assert np.allclose(out.probs, toy["clf"](out.images).softmax(1).numpy(), atol=1e-5)
    out2 = generate("gan", toy["clf"], x, tgt, generator=b, mode="latent", max_steps=30)
    assert out2.config["per_sample"]["attributes_source"].startswith("estimated")
    assert all(w[0].startswith("latent offset") for w in out2.config["per_sample"]["attributes_changed"])


def test_residual_output_starts_at_the_input_and_box_relaxation_may_extrapolate(toy):
    idx = np.arange(8)
    x = toy["x"][idx]
    res = gci_search(toy["G"], toy["clf"], x, 1 - toy["y"][idx], toy["attrs"][idx], SPEC,
                     GCIConfig(relax="box", output="residual", max_steps=1, snapshot_every=1))
    # before any step A' = A, so I + G(I; A') − G(I; A) = I exactly: what G cannot reconstruct is kept
    assert np.allclose(res.snapshots[0][1], x[:, 0].numpy(), atol=1e-6)
    assert res.trajectory["l1"][0].max() < 1e-6
    res = gci_search(toy["G"], toy["clf"], x, 1 - toy["y"][idx], toy["attrs"][idx], SPEC,
                     GCIConfig(relax="box", extrapolate=0.5, lr=0.5, max_steps=30, patience=10_000, lam=5.0))
    assert res.attrs.min() >= -0.5 - 1e-6 and res.attrs.max() <= 1.5 + 1e-6
    assert (res.attrs < 0).any() or (res.attrs > 1).any()
    with pytest.raises(ValueError):
        gci_search(toy["G"], toy["clf"], x, 1 - toy["y"][idx], toy["attrs"][idx], SPEC, GCIConfig(output="blend"))
