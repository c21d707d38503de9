"""A report measured on a large dataset reads the held-out splits chunk by chunk from the memory-mapped cache
(services.evidence.HeldOut): the per-image measures equal those of the whole split held in memory at once."""
from __future__ import annotations

import numpy as np
import torch

from services import evidence
from services.datasets import load_arrays
from services.models import load_classifier
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
