"""A report measured on a large dataset reads the held-out splits chunk by chunk from the memory-mapped cache
(services.retraining.evidence.HeldOut): the per-image measures equal those of the whole split held in memory at once."""
from __future__ import annotations

import numpy as np
import torch

from services.retraining import evidence
from services.data.datasets import load_arrays
from services.models.registry import load_classifier
from tests.helpers_explain import dataset_and_model


def test_chunked_heldout_measures_equal_the_whole_split(monkeypatch):
    ds_id, mid = dataset_and_model(n=80, size=32)
    model, _ = load_classifier(mid, "cpu")
    eager = evidence.measure(model, evidence.heldout_sets(load_arrays(ds_id), torch.device("cpu")))
    monkeypatch.setattr(evidence, "CHUNK", 7)  # several chunks per split, the last one short
    lazy_sets = evidence.heldout_sets(load_arrays(ds_id, mmap=True), torch.device("cpu"), lazy=True)
    assert all(isinstance(v, evidence.HeldOut) for v in lazy_sets.values())
    lazy = evidence.measure(model, lazy_sets)
    assert set(lazy) == set(eager) and set(lazy) <= {"val", "test", "test_shifted"}
    for s in eager:
        for k in ("correct", "ar", "ap", "wr"):
            assert lazy[s][k].shape == eager[s][k].shape and len(lazy[s][k]) > 7
            np.testing.assert_allclose(lazy[s][k], eager[s][k], atol=1e-6, equal_nan=True)


def test_evidence_measured_now_is_kept_and_reused(monkeypatch):
    """Models never change once registered: a report's evidence measured now is cached on disk, so the page, the
    HTML export and the CLI measure a large dataset once."""
    import torch as _t

    from core.models import create_model
    from services.models.registry import register_model, save_checkpoint_dir

    ds_id, mid = dataset_and_model(n=60, size=32)
    _t.manual_seed(1)
    cfg = {"arch": "simple_cnn", "num_classes": 4, "in_chans": 1, "classes": ["COVID", "Lung_Opacity", "Normal",
                                                                            "Viral Pneumonia"], "image_size": 32}
    child = register_model(name="child", arch="simple_cnn", dataset_id=ds_id, parent_id=mid, config=cfg,
                           checkpoint=save_checkpoint_dir(create_model("simple_cnn", 4, 1), cfg))
    first = evidence.for_pair(mid, child)
    assert first["source"] == "measured now"
    calls = []
    monkeypatch.setattr(evidence, "measure", lambda *a, **k: calls.append(1))
    again = evidence.for_pair(mid, child)
    assert calls == [] and again["source"] == "measured earlier (cached)"
    assert again["splits"] == first["splits"] and again["verdict"] == first["verdict"]
