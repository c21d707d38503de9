"""core.train.classifier on hand-made arrays: a tiny run beats chance clearly, seeded runs repeat, early stopping
keeps the best epoch, progress reports per epoch, a raising callback stops the run, augmentation never flips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data.arrays import DatasetArrays
from core.models import create_model
from core.train.classifier import TrainConfig, augment_batch, evaluate, fit, predict_proba


def quadrant_arrays(n=320, size=16, seed=0) -> DatasetArrays:
    """Class c = a bright blob in quadrant c on a noisy background; splits 60/20/20."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    img = rng.normal(60, 20, (n, size, size))
    h = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        img[i, r * h + 2:r * h + h - 2, q * h + 2:q * h + h - 2] += 120
    splits = np.array(["train"] * int(n * 0.6) + ["val"] * int(n * 0.2) + ["test"] * (n - int(n * 0.6) - int(n * 0.2)))
    z = np.zeros((n, size, size), np.uint8)
    return DatasetArrays(images=np.clip(img, 0, 255).astype(np.uint8), labels=labels.astype(np.int64), splits=splits,
                         classes=["a", "b", "c", "d"], image_ids=np.arange(n), lung=z, lesion=z, marker=z,
                         has_lung=np.zeros(n, bool), has_marker=np.zeros(n, bool))


def _fit(arr, seed=0, epochs=4, progress=None, **kw):
    torch.manual_seed(seed)
    m = create_model("simple_cnn", width=4)
    tr, va = arr.split_index("train"), arr.split_index("val")
    cfg = TrainConfig(epochs=epochs, lr=5e-3, batch_size=32, seed=seed, progress_every=2, **kw)
    res = fit(m, arr.images[tr], arr.labels[tr], arr.images[va], arr.labels[va], cfg, progress=progress)
    return m, res


def test_tiny_run_beats_chance_clearly_and_reports_per_epoch():
    arr = quadrant_arrays()
    calls = []
    m, res = _fit(arr, progress=lambda f, msg="", metrics=None, **k: calls.append((f, msg, metrics)))
    out = evaluate(m, arr, ("val", "test", "test_shifted"))
    assert set(out) == {"val", "test"}  # absent splits are left out
    assert out["test"]["accuracy"] > 0.8  # chance is 0.25
    epochs = [c[2] for c in calls if c[2] is not None]
    assert [e["epoch"] for e in epochs] == list(range(1, len(res.history) + 1))
    assert set(epochs[0]) == {"epoch", "train_loss", "val_loss", "val_acc"}
    assert any(c[2] is None and "batch" in c[1] for c in calls)  # batch-group progress between epochs
    assert all(0 <= c[0] <= 1 for c in calls)
    p = predict_proba(m, arr.images[:7])
    assert p.shape == (7, 4) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_seeded_runs_repeat_exactly():
    arr = quadrant_arrays(n=120)
    a, ra = _fit(arr, seed=3, epochs=2)
    b, rb = _fit(arr, seed=3, epochs=2)
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_early_stopping_keeps_the_best_epoch(monkeypatch):
    import core.train.classifier as C

    accs = iter([0.5, 0.9, 0.6, 0.6, 0.6, 0.6])
    states = {}
    real = C._val_metrics

    def fake(model, x, y, bs):
        real(model, x, y, bs)
        acc = next(accs)
        states[acc] = {k: v.clone() for k, v in model.state_dict().items()}
        return 1.0, acc

    monkeypatch.setattr(C, "_val_metrics", fake)
    m, res = _fit(quadrant_arrays(n=120), epochs=6, patience=2)
    assert res.best_epoch == 2 and res.stopped_early and len(res.history) == 4
    assert res.best_val_acc == 0.9
    assert all(torch.equal(v, states[0.9][k]) for k, v in m.state_dict().items())


def test_a_raising_progress_callback_stops_the_run():
    class Stop(Exception):
        pass

    def cb(f, msg="", metrics=None, **k):
        if metrics is not None:
            raise Stop

    with pytest.raises(Stop):
        _fit(quadrant_arrays(n=120), progress=cb)


def test_augmentation_never_flips_the_marker_corner():
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 1:6, 1:6] = 1.0  # a bright glyph in the top-left corner
    out = augment_batch(x, torch.Generator().manual_seed(0), max_shift=0.03, jitter=0.1, noise=0.0)
    h = 16
    mass = torch.stack([out[:, 0, :h, :h].sum((1, 2)), out[:, 0, :h, h:].sum((1, 2)),
                        out[:, 0, h:, :h].sum((1, 2)), out[:, 0, h:, h:].sum((1, 2))], 1)
    assert (mass.argmax(1) == 0).all()
    assert not torch.equal(out, x)  # it did change the images
    assert out.min() >= 0 and out.max() <= 1


def test_everything_frozen_is_refused():
    m = create_model("simple_cnn", width=4)
    for p in m.parameters():
        p.requires_grad_(False)
    arr = quadrant_arrays(n=40)
    with pytest.raises(ValueError, match="frozen"):
        fit(m, arr.images, arr.labels, arr.images[:0], arr.labels[:0], TrainConfig(epochs=1))
