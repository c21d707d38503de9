"""GAN counterfactuals as use cases: `gen train --kind gan` registers a complete generator; `counterfactual
--method gan` stores a result with the diffusion method's fields plus attributes_changed; without a DDPM the
category is by flip alone; the shipped GAN registers idempotently; the studio's GAN column renders (AppTest)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.jobs import lifecycle as jobs

KEYS = ("counterfactual_id", "flipped", "target_prob", "l1", "bpd", "category", "unet_passes", "seconds")


def train_tiny_gan(dataset: str, uid: int, steps: int = 4) -> dict:
    job = jobs.run_inline("gen.train", {"dataset": dataset, "kind": "gan", "steps": steps, "batch_size": 8,
                                        "width": 8, "sample_every": 2, "command": "exemplar gen train (test)"},
                          uid, echo=False)
    assert job["status"] == "succeeded", job["error"]
    return job


def gan_world(name: str, ddpm: bool = True) -> dict:
    """A 32 px SynthCXR with a classifier, a tiny GAN and (when ddpm) a tiny DDPM."""
    import torch

    from services.data.datasets import list_images, synth_dataset
    from services.models.training import train_classifier
    from services.team.users import get_or_create_user

    if ddpm:
        from tests.test_counterfactual_service import make_world

        w = make_world(name)
    else:
        torch.set_num_threads(1)
        uid = get_or_create_user("tester")
        ds = synth_dataset(name, n=48, size=32, confounder=0.9, seed=0, user_id=None)
        clf = train_classifier(ds["dataset_id"], "simple_cnn", epochs=1, arch_kwargs={"width": 4}, batch_size=16, user_id=None)
        w = {"user_id": uid, "dataset_id": ds["dataset_id"], "model_id": clf["model_id"],
             "image": list_images(ds["dataset_id"], "test")[0]}
    job = train_tiny_gan(name, w["user_id"])
    return {**w, "gan_job": job, "gan_id": job["result"]["generator_id"]}


@pytest.mark.slow
def test_gan_training_job_registers_a_complete_generator():
    from services.counterfactuals.gan import load_gan_generator
    from services.counterfactuals.generators import get_generator, list_generators

    w = gan_world("gtrain", ddpm=False)
    res = w["gan_job"]["result"]
    assert res["kind"] == "gan" and res["training_steps"] == 4
    assert res["attributes"] == ["class", "marker", "lesion_left", "lesion_right", "opacity"]
    row = get_generator(w["dataset_id"], "gan")
    assert row["id"] == w["gan_id"] and row["kind"] == "gan"
    assert [g["id"] for g in list_generators(w["dataset_id"], "gan")] == [w["gan_id"]]
    folder = Path(row["checkpoint"])
    for f in ("model.safetensors", "model.json", "provenance.json", "samples.png"):
        assert (folder / f).is_file(), f
    prov = json.loads((folder / "provenance.json").read_text())
    for k in ("command", "seed", "dataset_hash", "training_steps", "losses", "sample_grid", "attributes_source"):
        assert k in prov, k
    assert prov["attributes_source"] == "synthcxr attributes"
    assert prov["sample_grid_columns"][:3] == ["original", "reconstruction", "class=COVID"]
    # per-step metrics and sample grids went to the jobs row
    metrics = w["gan_job"]["metrics"]
    assert any("rec_l1" in m for m in metrics) and any("samples" in m for m in metrics)
    b = load_gan_generator(row)
    assert b.spec["marker"].values == ["top_left", "top_right", "bottom_left", "bottom_right"] and b.D is not None


@pytest.mark.slow
def test_gan_counterfactual_has_the_diffusion_fields_plus_attribute_changes():
    from services.counterfactuals.runs import get_counterfactual, load_arrays_of

    w = gan_world("gcf")
    for mode in ("attributes", "latent"):
        params = {"model_id": w["model_id"], "image": w["image"]["path"], "target": "Normal", "method": "gan",
                  "options": {"gan": {"max_steps": 6, "mode": mode}}}
        job = jobs.run_inline("counterfactual", params, w["user_id"], echo=False)
        assert job["status"] == "succeeded", job["error"]
        r = job["result"]
        for k in KEYS + ("attributes_changed",):
            assert k in r, k
        assert r["unet_passes"] == 0 and 1 <= r["generator_passes"] <= 6 and r["gan_mode"] == mode
        assert r["bpd"] is not None and r["bpd"] > 0  # scored under the dataset's DDPM
        assert r["category"] in ("counterfactual", "adversarial", "affirmative", "none")
        assert r["attributes_source"] == "known"
        assert isinstance(r["attributes_changed"], list)
        if mode == "latent":
            assert r["attributes_changed"][0].startswith("latent offset")
        row = get_counterfactual(r["counterfactual_id"])
        assert row["method"] == "gan" and row["generator_id"] == w["gan_id"]
        assert row["metrics"]["attributes_changed"] == r["attributes_changed"]
        arrs = load_arrays_of(row)
        assert "trajectory" in arrs and arrs["counterfactual"].shape == (32, 32)
        l1 = np.abs(arrs["counterfactual"].astype(float) - arrs["original"].astype(float)).mean() / 255
        assert r["l1"] == pytest.approx(l1)


@pytest.mark.slow
def test_without_a_ddpm_the_result_is_unclassified():
    w = gan_world("gnoddpm", ddpm=False)
    params = {"model_id": w["model_id"], "image": w["image"]["id"], "target": 0, "method": "gan",
              "options": {"gan": {"max_steps": 4}}}
    job = jobs.run_inline("counterfactual", params, w["user_id"], echo=False)
    assert job["status"] == "succeeded", job["error"]
    r = job["result"]
    assert r["bpd"] is None
    # never "counterfactual" on the flip alone (docs/architecture.md, Definitions)
    assert r["category"] == "unclassified"
    assert r["category_basis"].startswith("none (no DDPM")


@pytest.mark.slow
def test_the_gan_column_shows_metrics_and_attribute_changes():
    from streamlit.testing.v1 import AppTest

    w = gan_world("gcol", ddpm=False)
    job = jobs.run_inline("counterfactual", {"model_id": w["model_id"], "image": w["image"]["id"], "target": 2,
                                             "method": "gan", "options": {"gan": {"max_steps": 4}}},
                          w["user_id"], echo=False)
    cid = job["result"]["counterfactual_id"]
    script = f"""
from pages.parts.gan_column import render_gan_result, render_gan_trajectory
from services.counterfactuals.runs import get_counterfactual
row = get_counterfactual({cid})
render_gan_result(row)
render_gan_trajectory(row)
"""
    at = AppTest.from_string(script, default_timeout=60).run()
    assert not at.exception, at.exception
    md = "\n".join(m.value for m in at.markdown)
    assert "**GAN (GCI)**" in md and "**Attribute changes** · attributes mode" in md
    from pages.parts.gan_column import attribute_lines
    from pages.parts.plain import md_escape

    for line in attribute_lines({"metrics": {"attributes_changed": job["result"]["attributes_changed"]}}):
        assert md_escape(line) in md
    caps = [c.value for c in at.caption]
    assert any("p(target)" in c and "L1" in c and "bpd" in c and "generator passes" in c for c in caps)
    assert any(c.startswith("unclassified: none (no DDPM") for c in caps)
    img_caps = [i.caption for el in at.get("image") for i in el.proto.imgs]
    assert any("|Δ|" in c for c in img_caps) and any(c.startswith("G(I; A') at step") for c in img_caps)


@pytest.mark.slow
def test_the_studio_page_shows_a_gan_column():
    from tests.helpers_app import app_test, open_page
    from services.jobs.lifecycle import execute_job

    w = gan_world("gstudio", ddpm=False)
    at = app_test(user={"id": w["user_id"], "name": "tester"})
    at.query_params["image"] = str(w["image"]["id"])
    at = open_page(at, "counterfactuals")
    assert not at.exception, at.exception
    at.multiselect(key="cf_gen_methods").set_value(["gan"])
    at.button(key="cf_gen_run").click().run()
    assert not at.exception, at.exception
    job = execute_job(at.session_state["cf_gen_job"])
    assert job["status"] == "succeeded", job["error"]
    at.run()
    assert not at.exception, at.exception
    md = "\n".join(m.value for m in at.markdown)
    assert "**Original**" in md and "**GAN (GCI)**" in md and "**Attribute changes**" in md
    assert any(m.value.startswith("**Search** of #") for m in at.markdown)  # the GCI trajectory, not diffusion's
