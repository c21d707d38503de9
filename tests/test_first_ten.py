"""Issue 16 (a newcomer's first ten minutes): plain-word errors, the demo's ranking step, one colour per method,
captions computed from their numbers, ETA, adaptive batches, URL state encoding, ratings in one table."""
from __future__ import annotations

import io
import re
import threading

import numpy as np
import pytest
from PIL import Image as PILImage

from core.data.checks import BadFile, decode_gray
from services.presentation.palette import METHOD_COLOURS, METHOD_LABELS, colour_map, method_colour
from pages.parts.captions import edits_sentence
from services.platform.batching import adaptive_batches
from services.platform.errors import plain_error

REPR = re.compile(r"object at 0x|Error:|Exception:")


# ----------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("data", [b"not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30])
def test_decode_refusal_is_plain_words(data):
    with pytest.raises(BadFile) as exc:
        decode_gray(data)
    msg = str(exc.value)
    assert not REPR.search(msg) and "\n" not in msg
    assert "not a readable image" in msg or "corrupt" in msg


def test_truncated_png_is_plain_words():
    buf = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    with pytest.raises(BadFile) as exc:
        decode_gray(buf.getvalue()[:-200])
    assert "truncated or corrupt" in str(exc.value) and not REPR.search(str(exc.value))


def test_plain_error_hides_class_names_and_reprs_of_refusals():
    class ImportRefused(ValueError):
        pass

    e = ImportRefused("a.png: cannot identify image file <_io.BytesIO object at 0x7f47aa>")
    assert plain_error(e) == "a.png: cannot identify image file the file"
    assert plain_error(RuntimeError("boom")) == "RuntimeError: boom"  # internal errors keep their class


def test_import_refusal_names_the_file_in_one_line(tmp_path):
    from services.data.datasets import ImportRefused, synth_dataset
    from services.data.importing import import_dataset

    root = synth_dataset("t", n=16, size=32, user_id=None)["root"]
    import shutil

    imp = tmp_path / "imp"
    shutil.copytree(root, imp)
    bad = sorted((imp / "Normal" / "images").glob("*.png"))[0]
    bad.write_text("not a png")
    with pytest.raises(ImportRefused) as exc:
        import_dataset(imp, "covid-radiography", "imp", user_id=None)
    msg = str(exc.value)
    assert bad.name in msg and "\n" not in msg and not REPR.search(msg) and "--skip-bad" in msg


def test_missing_path_is_refused_before_a_job(tmp_path):
    from services.data.datasets import check_import_source

    with pytest.raises(ValueError, match="does not exist on the server"):
        check_import_source(tmp_path / "nope", "covid-radiography")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .zip"):
        check_import_source(tmp_path / "x.txt", "covid-radiography")
    with pytest.raises(ValueError, match="labels CSV"):
        check_import_source(tmp_path, "dicom")
    assert check_import_source(tmp_path, "imagefolder") == tmp_path


# ----------------------------------------------------------------------------------------------- demo

def test_the_demo_builds_the_ranking_right_after_the_baseline():
    from services.demo.steps import DEMO_STEPS, RANKING, ranking_params

    names = [s.name for s in DEMO_STEPS]
    assert names[:3] == ["dataset", "baseline", "ranking"]
    step = DEMO_STEPS[2]
    assert step.kind == "explain" and RANKING["method"] == "gradcam" and RANKING["splits"] == []  # every split
    assert ranking_params({"baseline": {"model_id": 7}})["model_id"] == 7


# ----------------------------------------------------------------------------------------------- palette

def test_one_distinct_colour_per_method_by_name_and_label():
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    for m, label in METHOD_LABELS.items():
        assert method_colour(m) == method_colour(label) == METHOD_COLOURS[m]
    assert colour_map(["GradCAM", "Integrated Gradients"]) == {"GradCAM": METHOD_COLOURS["gradcam"],
                                                                "Integrated Gradients": METHOD_COLOURS[
                                                                    "integrated_gradients"]}
    assert method_colour("something new") == method_colour("something new")


def test_pages_use_the_palette_for_methods():
    import pandas as pd

    from pages.parts.methods_view import curves_figure

    cf = pd.DataFrame([{"model": "#1 a", "method": m, "curve": "DEL", "removed": p, "value": 0.5}
                       for m in ("GradCAM", "Integrated Gradients", "LTX (finetuned)", "LTX (pretrained only)")
                       for p in (0.0, 0.5)])
    fig = curves_figure(cf)
    colours = {t.name.split(",")[0]: t.line.color for t in fig.data}
    assert colours["GradCAM"] == METHOD_COLOURS["gradcam"]
    assert len({colours[k] for k in colours}) == 4  # GradCAM / IG and the two LTX variants differ


# ----------------------------------------------------------------------------------------------- captions

def _cf(mid, marker, lung):
    return {"model_id": mid, "metrics": {"marker_share": marker, "lung_share": lung}}


def test_compare_caption_follows_the_table():
    # the case: the new model's counterfactuals edit the marker MORE (0.113 vs 0.093)
    s = edits_sentence([_cf(1, 0.093, 0.40), _cf(2, 0.113, 0.35)])
    assert "edit the marker box more than the old one's (#1) (0.113 vs 0.093" in s
    assert "do not show the shortcut going away" in s
    s = edits_sentence([_cf(1, 0.30, 0.20), _cf(2, 0.05, 0.50)])
    assert "marker box less" in s and "lungs more" in s and "as expected" in s
    assert edits_sentence([_cf(1, None, 0.2), _cf(2, 0.1, 0.3)]).startswith("n/a")


def test_evaluate_compare_sentence_agrees_with_the_table():
    import pandas as pd

    from pages.parts.captions import compare_sentence

    df = pd.DataFrame([{"split": "test", "metric": "accuracy", "B − A": -0.02},
                       {"split": "test_shifted", "metric": "accuracy", "B − A": 0.25},
                       {"split": "val", "metric": "accuracy", "B − A": None}])
    s = compare_sentence(df, {"id": 1}, {"id": 2})
    assert "test: A (#1) is more accurate by 0.020" in s and "test_shifted: B (#2) is more accurate by 0.250" in s
    assert "val: n/a" in s


# ----------------------------------------------------------------------------------------------- jobs

def test_duration_words():
    from pages.parts.job_progress import duration

    assert duration(65) == "1m 05s" and duration(None) == "n/a"


def test_adaptive_batches_cover_everything_and_start_small():
    seen = []
    for s, e in adaptive_batches(1000, 128):
        seen.append((s, e))
    assert seen[0] == (0, 2)
    assert [i for s, e in seen for i in range(s, e)] == list(range(1000))
    assert all(e - s <= 128 for s, e in seen)


def test_an_explain_job_cancelled_mid_batch_stops(monkeypatch):
    """Occlusion is slow: the cancel flag is seen between small batches and the job ends cancelled, unfinished."""
    from services.jobs import lifecycle as jobs
    from tests.helpers_explain import dataset_and_model

    ds_id, mid = dataset_and_model(n=60, size=32)
    jid = jobs.create_job("explain", {"model_id": mid, "method": "occlusion", "splits": []}, None)
    t = threading.Thread(target=jobs.execute_job, args=(jid,))
    t.start()
    while (jobs.get_job(jid)["progress"] or 0) <= 0.02 and jobs.get_job(jid)["status"] in ("queued", "running"):
        t.join(0.05)
    jobs.request_cancel(jid, user_id=None)
    t.join()
    row = jobs.get_job(jid)
    assert row["status"] == "cancelled" and row["progress"] < 0.9


# ----------------------------------------------------------------------------------------------- URL state

def test_url_values_round_trip():
    from pages.parts.state import decode, encode

    assert decode(encode([1, 3]), []) == [1, 3]
    assert decode(encode(["val", "test"]), []) == ["val", "test"]
    assert decode(encode(0.45), 0.5) == 0.45 and decode("7", 0) == 7
    assert decode("junk", 0) is None and decode(None, 0) is None


# ----------------------------------------------------------------------------------------------- ratings

def test_ratings_of_both_kinds_in_one_filterable_table():
    from db.models import Counterfactual
    from services.counterfactuals import runs as cfs
    from services.explanations import feedback as fb
    from services.platform.database import session
    from services.explanations.explaining import query_explanations
    from services.explanations.ratings import list_ratings, rating_methods
    from services.team.users import get_or_create_user
    from tests.helpers_explain import dataset_and_model, fake_run

    ds_id, mid = dataset_and_model(n=20, size=32)
    rid = fake_run(ds_id, mid)
    iid = query_explanations(rid, limit=1)[0][0]["image_id"]
    a, b = get_or_create_user("ann"), get_or_create_user("bob")
    fb.annotate(a, iid, "good", 4, "lungs", model_id=mid, run_id=rid)
    with session() as s:
        c = Counterfactual(model_id=mid, image_id=iid, method="diffusion", target=1)
        s.add(c)
        s.flush()
        cid = c.id
    cfs.annotate(cid, b, rating=2, plausible="no", comment="blurry")
    rows = list_ratings()
    assert [(r["kind"], r["user"], r["method"], r["rating"]) for r in rows] == [
        ("counterfactual", "bob", "diffusion", 2), ("explanation", "ann", "gradcam", 4)]
    assert [r["user"] for r in list_ratings(kind="explanation")] == ["ann"]
    assert [r["kind"] for r in list_ratings(user_id=b)] == ["counterfactual"]
    assert [r["kind"] for r in list_ratings(method="gradcam")] == ["explanation"]
    assert list_ratings(model_id=mid + 100) == []
    assert rating_methods() == ["diffusion", "gradcam"]
