"""Model registry: atomic checkpoint folders, rows only for complete checkpoints, identical logits after a
round trip, lineage, clean-up of partial folders."""
from __future__ import annotations

import os
import time

import pytest
import torch

from core.models import create_model
from services.models import registry as reg


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = create_model("simple_cnn", width=4).eval()
    return m, {"arch": "simple_cnn", "num_classes": 4, "in_chans": 1, "arch_kwargs": {"width": 4}}


def test_checkpoint_round_trip_gives_identical_logits():
    m, cfg = _tiny()
    # move BatchNorm statistics away from their defaults so the round trip covers buffers too
    m.train()
    with torch.no_grad():
        m(torch.rand(16, 1, 32, 32))
    m.eval()
    ckpt = reg.save_checkpoint_dir(m, cfg)
    assert ckpt.name == "model.safetensors" and ckpt.with_suffix(".json").is_file()
    assert ckpt.parent.parent == reg.models_root()
    mid = reg.register_model(name="t", arch="simple_cnn", checkpoint=ckpt, config=cfg)
    loaded, row = reg.load_classifier(mid, device="cpu")
    x = torch.rand(5, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))
    assert row["id"] == mid and reg.model_dir(mid) == ckpt.parent
    assert reg.model_dir(ckpt.parent.name) == ckpt.parent


def test_incomplete_checkpoint_is_not_registered(tmp_path):
    m, cfg = _tiny()
    ckpt = reg.save_checkpoint_dir(m, cfg)
    ckpt.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        reg.register_model(name="t", arch="simple_cnn", checkpoint=ckpt)
    with pytest.raises(FileNotFoundError):
        reg.register_model(name="t", arch="simple_cnn", checkpoint=tmp_path / "nothing" / "model.safetensors")
    from services.models.catalog import list_models

    assert list_models(kind=None) == []


def test_failed_write_leaves_no_folder(monkeypatch):
    import core.models.checkpoint as ck

    real = ck.save_file

    def half_then_fail(state, path):
        real(state, path)
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", half_then_fail)
    m, cfg = _tiny()
    with pytest.raises(OSError, match="disk full"):
        reg.save_checkpoint_dir(m, cfg)
    assert list(reg.models_root().iterdir()) == []


def test_prune_partial_removes_only_old_temp_folders():
    root = reg.models_root()
    old, new, done = root / ".tmp-old", root / ".tmp-new", root / "kept"
    for p in (old, new, done):
        p.mkdir()
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(done, (past, past))
    assert reg.prune_partial(older_than_s=3600) == 1
    assert not old.exists() and new.exists() and done.exists()


def test_lineage_and_find_model():
    m, cfg = _tiny()
    a = reg.register_model(name="base", arch="simple_cnn", checkpoint=reg.save_checkpoint_dir(m, cfg))
    b = reg.register_model(name="child", arch="simple_cnn", checkpoint=reg.save_checkpoint_dir(m, cfg), parent_id=a)
    c = reg.register_model(name="grandchild", arch="simple_cnn", checkpoint=reg.save_checkpoint_dir(m, cfg),
                           parent_id=b)
    assert reg.lineage(c) == [a, b, c]
    assert reg.find_model("child")["id"] == b and reg.find_model("nope") is None
    reg.update_metrics(a, {"test": {"accuracy": 0.5}})
    assert reg.get_model(a)["metrics"]["test"]["accuracy"] == 0.5
    with pytest.raises(ValueError, match="not a classifier"):
        g = reg.register_model(name="g", arch="ddpm", kind="ddpm", checkpoint=reg.save_checkpoint_dir(m, cfg))
        reg.load_classifier(g)
