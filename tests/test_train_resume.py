"""A training job retried after its process died resumes after its last finished epoch (issue 15): the resumed
run ends with the same weights and history as an uninterrupted one, and the epoch state is read safely."""
from __future__ import annotations

import numpy as np
import torch

from core.models import create_model
from core.train.classifier import TrainConfig, fit
from core.train.resume import FILE, load_epoch_state


class _Died(Exception):
    pass


def _data(n=48, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
    y = rng.integers(0, 4, n)
    return x, y


def _model():
    torch.manual_seed(0)
    return create_model("simple_cnn", num_classes=4, in_chans=1)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    x, y = _data()
    cfg = TrainConfig(epochs=4, batch_size=16, lr=1e-3, patience=10, seed=3, augment=True)
    ref = _model()
    ref_res = fit(ref, x[:32], y[:32], x[32:], y[32:], cfg)

    def die_after_epoch_2(fraction, message="", metrics=None, force=False):
        if metrics and metrics.get("epoch") == 2:
            raise _Died()

    state = tmp_path / "state"
    state.mkdir()
    m = _model()
    try:
        fit(m, x[:32], y[:32], x[32:], y[32:], cfg, progress=die_after_epoch_2, resume_dir=str(state))
    except _Died:
        pass
    saved = load_epoch_state(state)
    assert saved is not None and saved["epoch"] == 2 and len(saved["history"]) == 2
    seen = []
    m2 = _model()  # a fresh process: new model, state only from the folder
    res = fit(m2, x[:32], y[:32], x[32:], y[32:], cfg, resume_dir=str(state),
              progress=lambda f, msg="", metrics=None, force=False: seen.append(msg))
    assert any("resumed after epoch 2/4" in s for s in seen)
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert [round(r["train_loss"], 6) for r in res.history] == [round(r["train_loss"], 6) for r in ref_res.history]
    for (k, a), b in zip(ref.state_dict().items(), m2.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_an_unreadable_state_starts_from_epoch_1(tmp_path):
    (tmp_path / FILE).write_bytes(b"not a checkpoint")
    assert load_epoch_state(tmp_path) is None
    assert load_epoch_state(None) is None
