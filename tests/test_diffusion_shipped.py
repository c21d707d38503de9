"""The shipped SynthCXR DDPM: within the size limit, with honest provenance, and registered by `exemplar demo`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from services.counterfactuals.generators import SHIPPED_DDPM


def test_shipped_ddpm_is_small_complete_and_documented():
    weights = SHIPPED_DDPM / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 15 * 1024 * 1024
    assert (SHIPPED_DDPM / "scheduler" / "scheduler_config.json").is_file()
    assert (SHIPPED_DDPM / "samples.png").is_file()
    prov = json.loads((SHIPPED_DDPM / "provenance.json").read_text())
    assert prov["command"].startswith("exemplar gen train --dataset demo --kind ddpm")
    for k in ("seed", "dataset_hash", "training_steps", "final_loss", "sample_grid", "bpd"):
        assert prov.get(k) is not None, k
    assert prov["image_size"] == 64 and prov["training_steps"] > 0 and prov["bpd"]["eps"] > 0
    from core.generative.ddpm import load_ddpm

    unet, sch = load_ddpm(SHIPPED_DDPM)
    assert unet.config.sample_size == 64 and unet.config.in_channels == 1
    assert sch.config.num_train_timesteps == 1000


@pytest.mark.slow
def test_demo_step_registers_the_shipped_ddpm_once(monkeypatch):
    from services.demo import steps as demo
    from services.jobs import lifecycle as jobs
    from services.counterfactuals.generators import get_generator
    from services.team.users import get_or_create_user

    monkeypatch.setattr(demo, "DEMO_STEPS", [s for s in demo.DEMO_STEPS if s.name in ("dataset", "ddpm")])
    monkeypatch.setattr(demo, "DEMO_SYNTH", {**demo.DEMO_SYNTH, "n": 48})
    uid = get_or_create_user("tester")
    first = jobs.run_inline("demo", {}, uid, echo=False)
    assert first["status"] == "succeeded", first["error"]
    res = first["result"]
    assert [s["status"] for s in res["steps"]] == ["built", "built"]
    ds_id = res["dataset"]["dataset_id"]
    g = get_generator(ds_id, "ddpm")
    assert g["id"] == res["ddpm"]["generator_id"] and g["checkpoint"] == str(SHIPPED_DDPM.resolve())
    # a 48-image dataset is not the one the provenance's ε was computed on: ε is computed for it, once
    b = g["metrics"]["bpd"]
    assert b["dataset_id"] == ds_id and b["n"] > 0 and np.isfinite(b["eps"])
    again = jobs.run_inline("demo", {}, uid, echo=False)["result"]
    assert [s["status"] for s in again["steps"]] == ["existing", "existing"]
