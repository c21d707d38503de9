"""The shipped SynthCXR GAN: within the size limit, with honest provenance, and registered by `exemplar demo`."""
from __future__ import annotations

import json

import pytest

from services.counterfactuals.gan import SHIPPED_GAN


def test_shipped_gan_is_small_complete_and_documented():
    weights = SHIPPED_GAN / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 15 * 1024 * 1024
    assert (SHIPPED_GAN / "model.json").is_file() and (SHIPPED_GAN / "samples.png").is_file()
    prov = json.loads((SHIPPED_GAN / "provenance.json").read_text())
    assert prov["command"].startswith("exemplar gen train --dataset demo --kind gan")
    for k in ("seed", "dataset_hash", "training_steps", "losses", "sample_grid", "heldout_rec_l1"):
        assert prov.get(k) is not None, k
    assert prov["image_size"] == 64 and prov["training_steps"] > 0
    assert prov["heldout_rec_l1"] < prov["heldout_mean_image_l1"]
    from core.generative.gan import load_gan

    b = load_gan(weights)
    assert b.G.size == 64 and b.D is not None
    assert [g.name for g in b.spec.groups] == ["class", "marker", "lesion_left", "lesion_right", "opacity"]


@pytest.mark.slow
def test_demo_step_registers_the_shipped_gan_once(monkeypatch):
    from services.demo import steps as demo
    from services.jobs import lifecycle as jobs
    from services.counterfactuals.generators import get_generator
    from services.team.users import get_or_create_user

    monkeypatch.setattr(demo, "DEMO_STEPS", [s for s in demo.DEMO_STEPS if s.name in ("dataset", "gan")])
    monkeypatch.setattr(demo, "DEMO_SYNTH", {**demo.DEMO_SYNTH, "n": 48})
    uid = get_or_create_user("tester")
    first = jobs.run_inline("demo", {}, uid, echo=False)
    assert first["status"] == "succeeded", first["error"]
    res = first["result"]
    assert [s["status"] for s in res["steps"]] == ["built", "built"]
    g = get_generator(res["dataset"]["dataset_id"], "gan")
    assert g["id"] == res["gan"]["generator_id"] and g["checkpoint"] == str(SHIPPED_GAN.resolve())
    again = jobs.run_inline("demo", {}, uid, echo=False)["result"]
    assert [s["status"] for s in again["steps"]] == ["existing", "existing"]
