"""Native resolution end to end (issue 17): imports keep the native size, a model with its own input size explains
at the image's size, stored paths are relative to EXEMPLAR_HOME (a moved home still opens), migration 0006."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest


def test_import_keeps_native_299(tmp_path):
    from core.data import synthcxr
    from services.data.datasets import get_dataset, load_arrays
    from services.data.importing import import_dataset

    root = tmp_path / "cxr299"
    synthcxr.write_tree(root, n=16, size=299, confounder=0.9, seed=0)
    res = import_dataset(root, "covid-radiography", "big", user_id=None)
    ds = get_dataset("big")
    assert ds["image_size"] == 299
    assert res["report"]["native_size"] is True and res["report"]["resized"] == 0
    arr = load_arrays(ds["id"])
    assert arr.images.shape[1:] == (299, 299) and arr.lung.shape[1:] == (299, 299)
    assert arr.has_lung.all()
    mm = load_arrays(ds["id"], mmap=True)  # the memory-mapped cache holds the same pixels
    assert isinstance(mm.images, np.memmap)
    assert np.array_equal(np.asarray(mm.images[3]), arr.images[3])
    # an explicit size still works (and a re-import keeps the dataset's size)
    import_dataset(root, "covid-radiography", "small", size=64, user_id=None)
    assert get_dataset("small")["image_size"] == 64
    assert import_dataset(root, "covid-radiography", "big", user_id=None)["report"]["unchanged"] == 16


def test_native_size_of_mixed_sizes_is_the_first_images(tmp_path):
    from PIL import Image

    from services.data.datasets import get_dataset, load_arrays
    from services.data.importing import import_dataset

    for c, side in (("COVID", 120), ("Normal", 80)):
        (tmp_path / "t" / c / "images").mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((side, side), 40 * k, np.uint8)).save(tmp_path / "t" / c / "images" / f"{c}-{k}.png")
    res = import_dataset(tmp_path / "t", "covid-radiography", "mixed", user_id=None)
    assert get_dataset("mixed")["image_size"] == 120
    assert res["report"]["resized"] == 3
    assert load_arrays(res["dataset_id"]).images.shape[1:] == (120, 120)


@pytest.fixture()
def trained_48_on_96():
    from services.data.datasets import synth_dataset
    from services.models.training import train_classifier

    ds = synth_dataset("t96", n=80, size=96, seed=0, user_id=None)
    res = train_classifier(ds["dataset_id"], "simple_cnn", epochs=1, input_size=48, batch_size=32, threads=1,
                           arch_kwargs={"width": 8}, user_id=None)
    return ds, res


def test_model_at_48_explains_96_px_images_at_their_size(trained_48_on_96, monkeypatch):
    import torch

    from core.explain import explain
    from services.data.datasets import load_arrays
    from services.explanations.explaining import explain_one, load_maps, load_run, run_explain
    from services.models.registry import get_model, load_classifier

    ds, res = trained_48_on_96
    assert res["input_size"] == 48 and res["image_size"] == 96
    row = get_model(res["model_id"])
    assert row["config"]["input_size"] == 48
    model, _ = load_classifier(res["model_id"])
    assert model.input_size == 48
    arr = load_arrays(ds["dataset_id"])
    x96 = torch.from_numpy(arr.images[:4]).float().div(255)[:, None]
    x48 = torch.nn.functional.interpolate(x96, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():  # the model resizes native-size input itself
        assert torch.allclose(model(x96), model(x48), atol=1e-5)
        assert model.forward_features(x96).shape[-1] == 6  # 48 px / 8

    run = run_explain(res["model_id"], "gradcam", batch_size=32, user_id=None)
    assert run["image_size"] == 96 and run["map_size"] == [6, 6]
    raw = load_maps(run["run_id"], raw=True)
    assert raw.shape == (80, 6, 6) and raw.dtype == np.float16
    store = load_maps(run["run_id"])
    assert store.shape == (80, 96, 96)
    shown = store[np.arange(5)]
    assert shown.shape == (5, 96, 96)
    # the displayed map is E of docs/architecture.md, Definitions at the image size, as the metrics saw it
    e = explain(model, x96[:1], None, "gradcam").numpy()[0]
    assert e.shape == (96, 96)
    assert np.abs(shown[0] - e).max() < 5e-3
    one, _ = explain_one(model, arr.images[0])
    assert one.shape == (96, 96)
    s = load_run(run["run_id"])["summary"]
    assert s["ar_mean"] is not None and np.isfinite(s["ar_mean"])
    assert s["image_size"] == 96 and s["input_size"] == 48
    # re-mapping the cache between batches (what keeps a 21k-image run's memory flat) changes nothing
    from services.explanations import explaining
    from services.explanations.explaining import run_rows

    monkeypatch.setattr(explaining, "REMAP_EVERY", 16)
    again = run_explain(res["model_id"], "gradcam", batch_size=16, user_id=None)
    a = [r["ar"] for r in run_rows(run["run_id"])]
    b = [r["ar"] for r in run_rows(again["run_id"])]
    assert np.allclose(np.array(a, float), np.array(b, float), atol=1e-6, equal_nan=True)
    assert np.array_equal(load_maps(run["run_id"], raw=True), load_maps(again["run_id"], raw=True))


def test_stored_paths_are_relative_and_a_moved_home_still_opens(trained_48_on_96, exemplar_home, tmp_path,
                                                                 monkeypatch):
    from db.models import Dataset, ExplanationRun, Model
    from services.platform.database import session
    from services.explanations.explaining import run_explain
    from services.explanations.export import export_explanations
    from services.models.registry import load_classifier

    ds, res = trained_48_on_96
    run = run_explain(res["model_id"], "gradcam", batch_size=32, user_id=None)
    with session() as s:
        stored = [s.get(Dataset, ds["dataset_id"]).root, s.get(Model, res["model_id"]).checkpoint,
                  s.get(ExplanationRun, run["run_id"]).maps_path]
    assert stored[0] == "datasets/t96"
    assert all(not Path(p).is_absolute() for p in stored), stored

    moved = tmp_path / "elsewhere" / "home"
    moved.parent.mkdir()
    shutil.move(str(exemplar_home), str(moved))
    monkeypatch.setenv("EXEMPLAR_HOME", str(moved))
    from services.data.datasets import get_dataset

    assert Path(get_dataset("t96")["root"]) == moved / "datasets" / "t96"
    load_classifier(res["model_id"])
    out = export_explanations(run["run_id"], tmp_path / "x.npz", user_id=None)
    z = np.load(out["out"])
    assert z["maps"].shape == (80, 6, 6) and int(z["image_size"]) == 96
    assert np.isfinite(z["ar"]).any()
    again = run_explain(res["model_id"], "gradcam", batch_size=64, user_id=None)
    assert again["summary"]["ar_mean"] == pytest.approx(run["summary"]["ar_mean"], abs=1e-6)


def test_to_stored_keeps_outside_paths_absolute(exemplar_home, tmp_path):
    from services.platform.settings import from_stored, to_stored

    assert to_stored(exemplar_home / "models" / "a" / "m.safetensors") == "models/a/m.safetensors"
    outside = tmp_path / "outside" / "data"
    assert to_stored(outside) == str(outside)
    assert from_stored("models/a") == str(exemplar_home / "models" / "a")
    assert from_stored(str(outside)) == str(outside)


def test_migration_0006_makes_home_paths_relative(exemplar_home, tmp_path):
    import sqlalchemy as sa

    from db.migrate import upgrade

    url = f"sqlite:///{exemplar_home / 'exemplar.db'}"
    upgrade(url, "0001")
    eng = sa.create_engine(url)
    inside, outside = str(exemplar_home / "datasets" / "d"), str(tmp_path / "imported")
    with eng.begin() as c:
        for i, root in ((1, inside), (2, outside)):
            c.execute(sa.text("INSERT INTO datasets (id, name, root, layout, classes, image_size, counts, report, meta,"
                              " created_at) VALUES (:i, :n, :r, 'covid-radiography', '[]', 64, '{}', '{}', '{}', "
                              "'2026-01-01')"), {"i": i, "n": f"d{i}", "r": root})
    upgrade(url, "0006_paths")
    with eng.connect() as c:
        roots = dict(c.execute(sa.text("SELECT id, root FROM datasets")).all())
    assert roots == {1: "datasets/d", 2: outside}
    eng.dispose()


def test_maps_resize_matches_torch():
    import torch

    from core.explain import upsample_normalise as torch_up
    from core.maps import upsample_normalise

    m = np.random.default_rng(0).random((3, 7, 5)).astype(np.float32)
    m[1] = 0  # an all-zero map stays 0
    a = upsample_normalise(m, (96, 80))
    b = torch_up(torch.from_numpy(m), (96, 80)).numpy()
    assert a.shape == (3, 96, 80) and np.abs(a - b).max() < 1e-5
    assert a[1].max() == 0 and a[0].max() == pytest.approx(1.0)


def test_input_size_is_checked():
    from core.models import create_model

    with pytest.raises(ValueError, match="input size"):
        create_model("simple_cnn", input_size=4)
    assert create_model("simple_cnn", input_size=48).input_size == 48
    assert create_model("simple_cnn").input_size is None


def test_gpu_smoke_explains_itself_without_cuda():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(root / "bench" / "gpu_smoke.py")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout
    for b in ("gpu_smoke", "scale"):
        h = subprocess.run([sys.executable, str(root / "bench" / f"{b}.py"), "--help"], capture_output=True,
                           text=True, env=env, timeout=300)
        assert h.returncode == 0 and "usage" in h.stdout.lower()


def test_larger_demo_builds_at_its_size(monkeypatch):
    from services.demo import steps as demo
    from services.demo import large as demo_large
    from services.jobs import lifecycle as jobs
    from services.data.datasets import get_dataset
    from services.models.registry import get_model
    from services.team.users import get_or_create_user

    monkeypatch.setattr(demo, "DEMO_SYNTH", {**demo.DEMO_SYNTH, "n": 64})
    monkeypatch.setitem(demo_large.ARCH_SETTINGS, "mobilenet_v2",
                        {"epochs": 1, "lr": 1e-3, "batch_size": 32, "arch_kwargs": {"width_mult": 0.25}})
    uid = get_or_create_user("tester")
    row = jobs.run_inline("demo", {"size": 96, "arch": "mobilenet_v2"}, uid, echo=False)
    assert row["status"] == "succeeded", row["error"]
    res = row["result"]
    assert [s["name"] for s in res["steps"]] == ["dataset", "baseline"]
    assert get_dataset("demo-96")["image_size"] == 96
    m = get_model(res["baseline"]["model_id"])
    assert m["name"] == "demo-96-mobilenet_v2" and m["config"]["input_size"] == 96
    again = jobs.run_inline("demo", {"size": 96, "arch": "mobilenet_v2"}, uid, echo=False)["result"]
    assert [s["status"] for s in again["steps"]] == ["existing", "existing"]
