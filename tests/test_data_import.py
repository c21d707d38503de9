"""Dataset services: synth registration, import round trip, idempotency, the array cache and every bad input."""
from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from core.data import synthcxr
from services.data import datasets as D
from services.data import importing as I
from services.platform import uploads
from tests.helpers_data import bomb_png, db_snapshot, small_tree, write_png


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    small_tree(root, n=48, size=32, seed=0)
    return root


def test_synth_registers_rows_and_cache_matches_generator():
    res = D.synth_dataset("demo", n=48, size=32, confounder=0.9, seed=2, user_id=None)
    assert res["created"] and res["name"] == "demo"
    assert res["root"].endswith("datasets/demo")
    counts = res["counts"]
    assert set(counts) == set(synthcxr.CLASSES) and sum(sum(v.values()) for v in counts.values()) == 48
    gen = synthcxr.generate(n=48, size=32, confounder=0.9, seed=2)
    arr = D.load_arrays(res["dataset_id"])
    order = [synthcxr.relpaths(gen.labels).index(p) for p in arr.paths]
    assert np.array_equal(arr.images, gen.images[order]) and np.array_equal(arr.lung, gen.lung[order])
    assert np.array_equal(arr.marker, gen.marker[order]) and np.array_equal(arr.lesion, gen.lesion[order])
    assert np.array_equal(arr.labels, gen.labels[order]) and arr.has_lung.all() and arr.has_marker.all()
    img = D.resolve_image(res["dataset_id"], arr.paths[5])
    assert img["index"] == 5 and img["id"] == arr.image_ids[5] and img["class"] == synthcxr.CLASSES[arr.labels[5]]
    assert D.resolve_image(res["dataset_id"], str(img["id"]))["path"] == arr.paths[5]
    assert img["meta"]["marker_corner"] in synthcxr.CORNERS and "lesion_type" in img["meta"]
    with pytest.raises(ValueError):
        D.resolve_image(res["dataset_id"], "COVID/images/nope.png")
    # the cache is rebuilt when missing, identical
    D.cache_path(res["dataset_id"]).unlink()
    again = D.load_arrays(res["dataset_id"])
    assert np.array_equal(again.images, arr.images) and np.array_equal(again.image_ids, arr.image_ids)
    assert D.get_dataset("demo")["id"] == res["dataset_id"] == D.get_dataset(str(res["dataset_id"]))["id"]


def test_synth_name_clash_is_idempotent_or_refused():
    a = D.synth_dataset("s", n=32, size=32, seed=0, user_id=None)
    b = D.synth_dataset("s", n=32, size=32, seed=0, user_id=None)
    assert b["dataset_id"] == a["dataset_id"] and not b["created"]
    with pytest.raises(ValueError, match="already exists"):
        D.synth_dataset("s", n=32, size=32, seed=1, user_id=None)
    with pytest.raises(ValueError, match="name"):
        D.synth_dataset("../evil", n=32, size=32, user_id=None)


def test_import_round_trip_and_idempotent_reimport(tree):
    res = I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    rep = res["report"]
    assert rep["imported"] == 48 and rep["bad"] == [] and rep["masks"] == {"lung": 48, "lesion": 48, "marker": 48}
    splits = dict(line.split(",") for line in (tree / "splits.csv").read_text().splitlines()[1:])
    arr = D.load_arrays(res["dataset_id"])
    assert all(splits[p] == s for p, s in zip(arr.paths, arr.splits))
    assert sorted(np.unique(arr.splits)) == sorted(synthcxr.SPLITS)
    # the streamed cache holds what decoding every file again gives
    rebuilt = D.build_arrays(res["dataset_id"])
    for k in ("images", "lung", "lesion", "marker", "labels", "image_ids", "has_lung", "has_marker"):
        assert np.array_equal(getattr(arr, k), getattr(rebuilt, k)), k
    assert list(arr.paths) == list(rebuilt.paths) and list(arr.splits) == list(rebuilt.splits)
    before = db_snapshot()
    cache = D.cache_path(res["dataset_id"])
    stamp = (cache.stat().st_ino, cache.stat().st_mtime_ns)
    res2 = I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    assert res2["report"]["unchanged"] == 48 and res2["report"]["imported"] == 0 and not res2["created"]
    snap = db_snapshot()
    assert snap["images"] == before["images"]
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == stamp  # an unchanged re-import keeps its cache
    assert not list(cache.parent.glob("import-rows-*"))  # the import's spill folder is gone
    # one new file is appended at the next cache row
    src = tree / "Normal" / "images" / "Normal-1.png"
    extra = tree / "Normal" / "images" / "Normal-999.png"
    write_png(extra, 255 - np.asarray(Image.open(src)))
    res3 = I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    assert res3["report"]["imported"] == 1 and res3["report"]["unchanged"] == 48
    arr3 = D.load_arrays(res["dataset_id"])
    assert len(arr3) == 49 and arr3.paths[48] == "Normal/images/Normal-999.png"
    assert D.resolve_image(res["dataset_id"], "Normal/images/Normal-999.png")["index"] == 48
    assert not arr3.has_lung[48] and arr3.has_lung[:48].all()


def test_import_other_root_same_name_refused(tree, tmp_path):
    I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    other = tmp_path / "other"
    shutil.copytree(tree, other)
    with pytest.raises(ValueError, match="already exists"):
        I.import_dataset(other, "covid-radiography", "imp", size=32, user_id=None)


def test_imagefolder_with_masks_and_seeded_splits(tmp_path):
    root = tmp_path / "if"
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        for i in range(20):
            a = rng.integers(0, 255, (40, 50), dtype=np.uint8)
            write_png(root / cls / f"{i}.png", a)
            if i % 2 == 0:
                write_png(root / "masks" / cls / f"{i}.png", (np.arange(50)[None, :] > 25).repeat(40, 0).astype(np.uint8) * 255)
    res = I.import_dataset(root, "imagefolder", "pets", size=32, seed=1, user_id=None)
    d = D.get_dataset("pets")
    assert d["classes"] == ["cats", "dogs"] and res["report"]["masks"]["lung"] == 20
    arr = D.load_arrays(res["dataset_id"])
    assert set(np.unique(arr.splits)) == {"train", "val", "test"}
    assert all(sum(res["counts"][c].values()) == 20 for c in ("cats", "dogs"))
    assert arr.has_lung.sum() == 20 and arr.lung[arr.has_lung][:, :, :15].sum() == 0
    # same seed → same splits in another dataset
    res2 = I.import_dataset(root, "imagefolder", "pets2", size=32, seed=1, user_id=None)
    assert res2["counts"] == res["counts"]
    assert list(D.load_arrays(res2["dataset_id"]).splits) == list(arr.splits)


def _truncate(tree):
    f = tree / "Normal" / "images" / "Normal-1.png"
    f.write_bytes(f.read_bytes()[:100])
    return "Normal/images/Normal-1.png", "truncated"


def _text_png(tree):
    (tree / "COVID" / "images" / "COVID-1.png").write_text("this is not an image\n")
    return "COVID/images/COVID-1.png", "not a readable image"


def _bomb(tree):
    bomb_png(tree / "COVID" / "images" / "COVID-2.png")
    return "COVID/images/COVID-2.png", "decompression bomb"


def _empty(tree):
    (tree / "Lung_Opacity" / "images" / "Lung_Opacity-1.png").write_bytes(b"")
    return "Lung_Opacity/images/Lung_Opacity-1.png", "empty file"


def _mask_shape(tree):
    write_png(tree / "Normal" / "masks" / "Normal-2.png", np.zeros((32, 16), np.uint8))
    return "Normal/images/Normal-2.png", "does not match image"


def _unknown_class(tree):
    write_png(tree / "Tuberculosis" / "images" / "Tuberculosis-1.png", np.zeros((32, 32), np.uint8))
    return "Tuberculosis/", "unknown class folder"


def _symlink_out(tree):
    outside = tree.parent / "outside.png"
    write_png(outside, np.zeros((32, 32), np.uint8))
    os.symlink(outside, tree / "Normal" / "images" / "Normal-777.png")
    return "Normal/images/Normal-777.png", "outside the dataset root"


def _symlink_dir_out(tree):
    outside = tree.parent / "outside_dir"
    write_png(outside / "x.png", np.zeros((32, 32), np.uint8))
    os.symlink(outside, tree / "COVID" / "images" / "linked")
    return "COVID/images/linked/", "outside the dataset root"


def _splits_escape(tree):
    with open(tree / "splits.csv", "a") as fh:
        fh.write("../../etc/passwd,train\n")
    return "../../etc/passwd", "outside the dataset root"


def _not_utf8(tree):
    name = os.path.join(os.fsencode(tree), b"COVID", b"images", b"bad\xff\xfe.png")
    with open(name, "wb") as fh:
        fh.write((tree / "COVID" / "images" / "COVID-3.png").read_bytes())
    return "COVID/images/bad\\xff\\xfe.png", "not valid UTF-8"


BAD_CASES = [_truncate, _text_png, _bomb, _empty, _mask_shape, _unknown_class, _symlink_out, _symlink_dir_out,
             _splits_escape, _not_utf8]


@pytest.mark.parametrize("make_bad", BAD_CASES, ids=[f.__name__.strip("_") for f in BAD_CASES])
def test_bad_input_refused_db_unchanged_then_skipped(tree, make_bad):
    D.synth_dataset("other", n=16, size=32, user_id=None)  # something already in the database
    path, reason = make_bad(tree)
    before = db_snapshot()
    with pytest.raises(D.ImportRefused) as exc:
        I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    assert path in str(exc.value) and reason in str(exc.value)
    assert db_snapshot() == before
    assert not D.cache_path(2).exists()
    assert not list(D.cache_path(2).parent.glob("import-rows-*"))  # a refused import leaves no spilled rows
    res = I.import_dataset(tree, "covid-radiography", "imp", size=32, skip_bad=True, user_id=None)
    bad = {b["path"]: b["reason"] for b in res["report"]["bad"]}
    assert path in bad and reason in bad[path]
    assert D.get_dataset("imp")["report"]["bad_count"] == len(bad)
    n_good = res["report"]["imported"]
    assert 40 <= n_good <= 48 and len(D.load_arrays(res["dataset_id"])) == n_good


def test_bad_file_in_reimport_leaves_existing_dataset_unchanged(tree):
    I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    before = db_snapshot()
    _text_png(tree)
    with pytest.raises(D.ImportRefused):
        I.import_dataset(tree, "covid-radiography", "imp", size=32, user_id=None)
    assert db_snapshot() == before


def _zip(tree, dest, extra=None):
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(tree.rglob("*")):
            if p.is_file():
                zf.write(p, "data/" + p.relative_to(tree).as_posix())
        for name, data in (extra or {}).items():
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"/etc/passwd")
            else:
                zf.writestr(name, data)
    return dest


def test_zip_upload_imports(tree, tmp_path, exemplar_home):
    z = _zip(tree, tmp_path / "up.zip")
    res = I.import_dataset(z, "covid-radiography", "zipped", size=32, user_id=None)
    assert res["report"]["imported"] == 48 and res["root"].startswith(str(exemplar_home / "uploads"))
    res2 = I.import_dataset(z, "covid-radiography", "zipped", size=32, user_id=None)
    assert res2["report"]["unchanged"] == 48


def test_zip_slip_refused_and_nothing_written_outside(tree, tmp_path, exemplar_home):
    link = zipfile.ZipInfo("data/Normal/images/link.png")
    link.external_attr = (0o120777 << 16)
    z = _zip(tree, tmp_path / "evil.zip", {"data/../../../../evil.png": b"x", "/abs.png": b"y", "link": link})
    before = db_snapshot()
    with pytest.raises(D.ImportRefused) as exc:
        I.import_dataset(z, "covid-radiography", "evil", size=32, user_id=None)
    msg = str(exc.value)
    assert "zip slip" in msg and "symbolic link" in msg
    assert db_snapshot() == before
    assert not list(exemplar_home.rglob("evil.png")) and not (tmp_path / "evil.png").exists()
    assert not any((exemplar_home / "uploads").iterdir())  # the refused extraction was removed
    res = I.import_dataset(z, "covid-radiography", "evil", size=32, skip_bad=True, user_id=None)
    assert res["report"]["imported"] == 48 and len(res["report"]["bad"]) == 3


def test_zip_bomb_entry_refused(tmp_path, tree):
    z = _zip(tree, tmp_path / "bomb.zip")
    with zipfile.ZipFile(z, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/Normal/images/huge.png", b"\0" * (20 << 20))
    with pytest.raises(D.ImportRefused, match="zip bomb"):
        I.import_dataset(z, "covid-radiography", "bomb", size=32, user_id=None)


def test_cli_synth_list_import(tree):
    from services.cli import app

    r = CliRunner().invoke(app, ["data", "synth", "--name", "c", "--n", "32", "--size", "32", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"dataset_id", "name", "root", "counts"} <= set(out)
    r = CliRunner().invoke(app, ["data", "list", "--json"])
    assert json.loads(r.stdout.strip().splitlines()[-1])["count"] == 1
    _truncate(tree)
    r = CliRunner().invoke(app, ["data", "import", str(tree), "--name", "x", "--size", "32", "--json"])
    assert r.exit_code != 0 and "truncated" in r.output
    r = CliRunner().invoke(app, ["data", "import", str(tree), "--name", "x", "--size", "32", "--skip-bad", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["report"]["bad_count"] == 1


def _imagefolder_with_a_non_utf8_name(root):
    """Two classes of six PNGs and one more whose name is the bytes b"bad\\xff\\xfe.png" (faults check § 5)."""
    for ci, c in enumerate("ab"):
        for k in range(6):
            px = np.random.default_rng(100 * ci + k).integers(0, 255, (32, 32), dtype=np.uint8)
            write_png(root / c / f"img{k}.png", px)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(os.path.join(os.fsencode(root), b"a", b"bad\xff\xfe.png"))


def test_non_utf8_file_name_is_named_and_skipped_or_refused_alone(tmp_path):
    root = tmp_path / "nu"
    _imagefolder_with_a_non_utf8_name(root)
    before = db_snapshot()
    with pytest.raises(D.ImportRefused) as exc:
        I.import_dataset(root, "imagefolder", "nu", user_id=None)
    msg = str(exc.value)
    assert "\n" not in msg and "a/bad\\xff\\xfe.png" in msg and "not valid UTF-8" in msg
    assert "1 bad file" in msg and db_snapshot() == before
    res = I.import_dataset(root, "imagefolder", "nu", skip_bad=True, user_id=None)
    rep = res["report"]
    assert rep["bad_count"] == 1 and rep["bad"][0]["path"] == "a/bad\\xff\\xfe.png" and rep["scanned"] == 13
    assert res["counts"]["a"]["train"] + res["counts"]["b"]["train"] >= 6 and rep["imported"] == 12
    assert all("\\x" not in im["path"] for im in D.list_images(res["dataset_id"]))


def test_cli_import_names_its_source_by_upload_id_and_removes_it(tmp_path, exemplar_home):
    from services.cli import app
    from services.jobs.lifecycle import list_jobs
    from tests.helpers_data import db_text

    root = tmp_path / "Doe_John_export"
    _imagefolder_with_a_non_utf8_name(root)
    r = CliRunner().invoke(app, ["data", "import", str(root), "--layout", "imagefolder", "--name", "nu",
                                 "--skip-bad", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["report"]["bad_count"] == 1 and "root" not in out and "root" not in out["report"]
    job = list_jobs()[0]
    assert set(job["params"]) >= {"upload", "layout", "name"} and "path" not in job["params"]
    stored = db_text().replace(D.get_dataset("nu")["root"], "")  # an imagefolder's images stay in its folder
    assert "Doe_John" not in stored and job["status"] == "succeeded"
    assert not [p for p in (exemplar_home / "uploads").iterdir() if p.name.startswith("up-")]
