"""The small DDPM: sizes within the shipped-weights limit, a few training steps, sampling, atomic save / load."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.generative.ddpm import (MAX_WEIGHT_BYTES_64, build_ddpm, grid_image, load_ddpm, sample, save_ddpm,
                                  strided_timesteps, train_ddpm, weight_bytes)


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_presets_fit_the_15_mb_limit_at_64px(preset):
    unet, sch = build_ddpm(64, preset)
    assert weight_bytes(unet) <= MAX_WEIGHT_BYTES_64
    assert unet.config.in_channels == 1 and unet.config.sample_size == 64
    assert sch.config.prediction_type == "epsilon" and sch.config.variance_type == "fixed_small"


def test_sizes_outside_32_to_128_are_refused():
    with pytest.raises(ValueError):
        build_ddpm(16, "tiny")
    with pytest.raises(ValueError):
        build_ddpm(60, "tiny")


def test_strided_timesteps():
    assert strided_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert strided_timesteps(1000, 3, start=400) == [400, 200, 0]
    assert strided_timesteps(10, 50) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        strided_timesteps(100, 5, start=100)


def test_train_sample_save_load_round_trip(tmp_path):
    unet, sch = build_ddpm(32, "tiny", num_train_timesteps=50)
    imgs = (np.random.default_rng(0).random((20, 32, 32)) * 255).astype(np.uint8)
    seen = []
    ema, rep = train_ddpm(unet, sch, imgs, steps=6, batch_size=4, seed=0, log_every=2,
                          progress=lambda s, l: seen.append((s, l)))
    assert rep.steps == 6 and [s for s, _ in seen] == [2, 4, 6] and np.isfinite(rep.final_loss)
    x = sample(ema, sch, 3, steps=4, seed=1)
    assert x.shape == (3, 1, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert grid_image((x[:, 0].numpy() * 255).astype(np.uint8), nrow=2).size == (2 * 34 + 2, 2 * 34 + 2)
    out = save_ddpm(ema, sch, tmp_path / "g", extra_files={"provenance.json": json.dumps({"ok": 1}).encode()})
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temp folder was renamed away
    unet2, sch2 = load_ddpm(out)
    t = torch.tensor([7])
    z = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(unet2(z, t).sample, ema(z, t).sample)
    assert sch2.config.num_train_timesteps == 50
    with pytest.raises(FileExistsError):
        save_ddpm(ema, sch, out)


def test_max_seconds_stops_early_and_says_so():
    unet, sch = build_ddpm(32, "tiny", num_train_timesteps=50)
    imgs = np.zeros((4, 32, 32), dtype=np.uint8)
    _, rep = train_ddpm(unet, sch, imgs, steps=1000, batch_size=2, max_seconds=0.0)
    assert rep.stopped_early and rep.steps == 1
