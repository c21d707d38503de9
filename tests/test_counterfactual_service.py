"""The counterfactual job end to end on a tiny SynthCXR, DDPM and classifier: rows, arrays, ratings, export."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from services.jobs import lifecycle as jobs


def make_world(tmp_name: str = "cf") -> dict:
    """A 32 px SynthCXR with a classifier and a tiny DDPM (2 training steps), all registered."""
    import torch

    from services.data.datasets import list_images, synth_dataset
    from services.models.training import train_classifier
    from services.team.users import get_or_create_user

    torch.set_num_threads(1)
    uid = get_or_create_user("tester")
    ds = synth_dataset(tmp_name, n=48, size=32, confounder=0.9, seed=0, user_id=None)
    clf = train_classifier(ds["dataset_id"], "simple_cnn", epochs=1, arch_kwargs={"width": 4}, batch_size=16, user_id=None)
    job = jobs.run_inline("gen.train", {"dataset": tmp_name, "kind": "ddpm", "steps": 2, "preset": "tiny",
                                        "batch_size": 4, "bpd_images": 4, "bpd_terms": 4, "grid_n": 2,
                                        "grid_steps": 2, "command": "exemplar gen train (test)"}, uid, echo=False)
    assert job["status"] == "succeeded", job["error"]
    test = [im for im in list_images(ds["dataset_id"], "test")]
    return {"user_id": uid, "dataset_id": ds["dataset_id"], "model_id": clf["model_id"],
            "generator_id": job["result"]["generator_id"], "image": test[0], "gen": job["result"]}


TINY = {"diffusion": {"steps": 3, "t_start": 60}, "adversarial": {"max_steps": 5}}


@pytest.mark.slow
def test_counterfactual_job_stores_scores_rates_and_exports():
    from services.counterfactuals.runs import (annotate, export_zip, get_counterfactual, list_annotations,
                                          list_counterfactuals, load_arrays_of)
    from services.counterfactuals.generators import get_generator

    w = make_world()
    gen = get_generator(w["dataset_id"], "ddpm")
    assert gen["id"] == w["generator_id"]
    b = gen["metrics"]["bpd"]
    assert b["eps"] > 0 and b["estimator"].startswith("strided") and b["split"] == "val"
    prov = json.loads((__import__("pathlib").Path(gen["checkpoint"]) / "provenance.json").read_text())
    for k in ("command", "seed", "dataset_hash", "training_steps", "final_loss", "sample_grid"):
        assert k in prov
    assert prov["training_steps"] == 2

    params = {"model_id": w["model_id"], "image": w["image"]["path"], "target": "Normal",
              "methods": ["diffusion", "adversarial"], "affirmative": True, "options": TINY, "n_seeds": 2}
    job = jobs.run_inline("counterfactual", params, w["user_id"], echo=False)
    assert job["status"] == "succeeded", job["error"]
    res = job["result"]
    assert [r["method"] for r in res["results"]] == ["diffusion", "adversarial"]
    for r in res["results"]:
        for k in ("counterfactual_id", "flipped", "target_prob", "l1", "bpd", "category", "unet_passes", "seconds"):
            assert k in r
        assert 0 <= r["target_prob"] <= 1 and r["bpd"] > 0
        assert r["category"] in ("counterfactual", "adversarial", "affirmative", "none")
    diff, adv = res["results"]
    assert diff["unet_passes"] == 3 and adv["unet_passes"] == 0
    row = get_counterfactual(diff["counterfactual_id"])
    assert row["generator_id"] == w["generator_id"] and row["preset"] == "fast" and row["job_id"] == job["id"]
    assert row["metrics"]["affirmative"]["category"] in ("affirmative", "none", "counterfactual", "adversarial")
    arrs = load_arrays_of(row)
    for k in ("original", "counterfactual", "affirmative", "trajectory", "prob_curve", "candidates", "lung", "marker"):
        assert k in arrs, k
    assert arrs["candidates"].shape[0] == 2 and arrs["original"].shape == (32, 32)
    # L1 is the mean |Δ| in [0, 1] pixel units of the stored image
    l1 = np.abs(arrs["counterfactual"].astype(float) - arrs["original"].astype(float)).mean() / 255
    assert row["l1"] == pytest.approx(l1)
    assert len(list_counterfactuals(image_id=w["image"]["id"])) == 2

    aid = annotate(diff["counterfactual_id"], w["user_id"], rating=4, plausible="unsure", comment="lungs <b>ok</b>")
    anns = list_annotations(diff["counterfactual_id"])
    assert [a["id"] for a in anns] == [aid] and anns[0]["rating"] == 4 and anns[0]["model_id"] == w["model_id"]
    assert anns[0]["comment"] == "lungs <b>ok</b>"
    with pytest.raises(ValueError):
        annotate(diff["counterfactual_id"], w["user_id"], rating=6)
    with pytest.raises(ValueError):
        annotate(diff["counterfactual_id"], w["user_id"], plausible="maybe")

    z = zipfile.ZipFile(io.BytesIO(export_zip([diff["counterfactual_id"]], user_id=None)))
    names = set(z.namelist())
    assert {"counterfactuals.csv", "annotations.csv", "metrics.json"} <= names
    cid = diff["counterfactual_id"]
    assert {f"cf_{cid}/original.png", f"cf_{cid}/counterfactual.png", f"cf_{cid}/affirmative.png",
            f"cf_{cid}/abs_delta.png", f"cf_{cid}/arrays.npz"} <= names
    assert "lungs <b>ok</b>" in z.read("annotations.csv").decode()

    # the CLI contract: one JSON object with the keys of the issue
    from typer.testing import CliRunner

    from services.cli import app

    out = CliRunner().invoke(app, ["counterfactual", "--model", str(w["model_id"]), "--image", str(w["image"]["id"]),
                                   "--target", "COVID", "--method", "adversarial", "--steps", "3", "--json"])
    assert out.exit_code == 0, out.output
    j = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(["counterfactual_id", "flipped", "target_prob", "l1", "bpd", "category", "unet_passes",
                "seconds"]) <= set(j)


@pytest.mark.slow
def test_counterfactual_job_refuses_bad_input_with_clear_errors():
    w = make_world("cf2")
    bad = [({"target": "Nope"}, "unknown target class"), ({"methods": ["warp"]}, "unknown method"),
           ({"image": "no/such.png"}, "no image"), ({"preset": "slow"}, "unknown preset")]
    for change, msg in bad:
        params = {"model_id": w["model_id"], "image": w["image"]["id"], "target": "Normal", "methods": ["adversarial"],
                  "options": TINY, **change}
        job = jobs.run_inline("counterfactual", params, w["user_id"], echo=False)
        assert job["status"] == "failed" and msg in job["error"], (change, job["error"])
    job = jobs.run_inline("counterfactual", {"model_id": w["generator_id"], "image": w["image"]["id"],
                                             "target": "Normal"}, w["user_id"], echo=False)
    assert job["status"] == "failed" and "no classifier" in job["error"]


@pytest.mark.slow
def test_finished_samples_cross_model_verdict_realism_and_artefact_probe():
    """A fast diffusion result is a sample at t = 0 whose passes add up, scored by the independent classifier B;
    stored results get FD / KID in B's feature space; the artefact probe and its CLI report per-corner changes."""
    from services.counterfactuals.runs import get_counterfactual
    from services.counterfactuals.probe import change_mass, probe_artefact
    from services.counterfactuals.realism import realism_table
    from services.models.training import train_classifier

    w = make_world("cfx")
    b = train_classifier(w["dataset_id"], "mobilenet_v2", epochs=1, arch_kwargs={"width_mult": 0.25}, batch_size=16,
                         name="cfx-independent", user_id=None)
    opts = {"diffusion": {"steps": 6, "t_start": 60, "early_stop": 1, "finish_steps": 3, "s_cls": 5.0,
                          "finish": "ddim"}}
    params = {"model_id": w["model_id"], "image": w["image"]["id"], "target": "Normal", "methods": ["diffusion"],
              "options": opts, "n_seeds": 2}
    rows = []
    for seed in (0, 7):
        job = jobs.run_inline("counterfactual", {**params, "seed": seed}, w["user_id"], echo=False)
        assert job["status"] == "succeeded", job["error"]
        r = job["result"]
        assert r["t_final"] == 0
        assert 1 <= r["guided_passes"] <= r["unet_passes"] <= 6 + 3
        if r["guidance_stopped_t"]:  # stopped early: the finishing DDIM's passes count too
            assert r["unet_passes"] > r["guided_passes"]
        assert isinstance(r["cross_model_flipped"], bool) and r["cross_model_id"] == b["model_id"]
        row = get_counterfactual(r["counterfactual_id"])
        assert row["unet_passes"] == r["unet_passes"] and row["metrics"]["cross_model"]["model_id"] == b["model_id"]
        # the whole cost: both tries' passes, and the flip rate per try beside the best-of-2 `flipped`
        assert r["tries"] == 2 and r["unet_passes"] <= r["unet_passes_total"] <= 2 * (6 + 3)
        assert row["metrics"]["unet_passes_total"] == r["unet_passes_total"]
        assert r["flip_rate_per_try"] in (0.0, 0.5, 1.0) and (r["flip_rate_per_try"] > 0) == r["flipped"]
        rows.append(row)
    table, why = realism_table(rows)
    assert len(table) == 1 and table[0].n == 2 and table[0].feature_model_id == b["model_id"], why
    assert np.isfinite(table[0].fd) and table[0].fd >= 0 and np.isfinite(table[0].kid)

    p = probe_artefact(w["model_id"])
    assert len(p.positions) == 4 and all(0 <= q["changed"] <= 1 for q in p.positions)
    assert set(p.positions[0]["shift"]) == set(p.classes)
    cm = change_mass(w["model_id"])
    assert cm.n == 2 and (np.isnan(cm.marker_ratio) or cm.marker_ratio >= 0)

    from typer.testing import CliRunner

    from services.cli import app

    out = CliRunner().invoke(app, ["probe", "artefact", "--model", str(w["model_id"]), "--json"])
    assert out.exit_code == 0, out.output
    j = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(j["positions"]) == 4 and all(len(q["box"]) == 4 for q in j["positions"])
    bad = CliRunner().invoke(app, ["probe", "artefact", "--model", str(w["model_id"]), "--artefact", "nope.png",
                                   "--json"])
    assert bad.exit_code != 0 and "nope.png" in bad.output


def test_a_reader_is_refused_the_counterfactual_export_and_nothing_is_recorded():
    from services.counterfactuals.runs import export_zip
    from services.team.access import set_role
    from services.team.audit_log import list_rows
    from services.team.roles import PermissionRefused
    from services.team.users import get_or_create_user

    admin = get_or_create_user("tester")  # the first user: admin
    reader = set_role(admin, "r1", "reader")["id"]
    with pytest.raises(PermissionRefused, match="role reader; to export needs a researcher") as refused:
        export_zip(None, user_id=reader)
    assert "\n" not in str(refused.value) and list_rows(admin, action="export") == []
