"""LTXExplainer: a small U-Net-like encoder–decoder e_φ(x) → mask m ∈ [0, 1] at the image size.

The decoder stops at `out_stride` (default 4: a 16×16 mask for a 64×64 image, the LTX paper likewise predicts a
coarse mask for CNNs), a 1×1 conv gives logits, sigmoid, then bilinear upsampling to the image size. GroupNorm,
not BatchNorm: the mask of one image never depends on the others in its batch, so per-instance finetuning can run
many independent copies at once (torch.func.vmap) and a batch of one gives the same mask as a batch of many.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(4, cout), cout), nn.ReLU())


class LTXExplainer(nn.Module):
    """e_φ: images (N, C, H, W) in [0, 1] → masks (N, 1, H, W) in [0, 1].

    width: channels of the first level (doubling per level); depth: down-sampling levels (stride 2 each);
    out_stride: resolution of the predicted mask before upsampling (a power of two ≤ 2**depth);
    init_mask: the mask value the untrained explainer starts from (sigmoid of the output bias).
    """

    def __init__(self, in_chans: int = 1, width: int = 16, depth: int = 3, out_stride: int = 4,
                 init_mask: float = 0.8, mean: float = 0.5, std: float = 0.25):
        super().__init__()
        if out_stride < 1 or out_stride & (out_stride - 1) or out_stride > 2 ** depth:
            raise ValueError(f"out_stride must be a power of two ≤ 2**depth = {2 ** depth}, got {out_stride}")
        if not 0.0 < init_mask < 1.0:
            raise ValueError(f"init_mask must be in (0, 1), got {init_mask}")
        self.config = {"in_chans": in_chans, "width": width, "depth": depth, "out_stride": out_stride,
                       "init_mask": init_mask, "mean": mean, "std": std}
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.stem = _conv(in_chans, chans[0])
        self.down = nn.ModuleList(nn.Sequential(_conv(chans[i], chans[i + 1], 2), _conv(chans[i + 1], chans[i + 1]))
                                  for i in range(depth))
        n_up = depth - (out_stride.bit_length() - 1)
        self.up = nn.ModuleList(_conv(chans[depth - i] + chans[depth - i - 1], chans[depth - i - 1])
                                for i in range(n_up))
        self.out = nn.Conv2d(chans[depth - n_up], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, float(torch.logit(torch.tensor(init_mask))))
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def mask_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H / out_stride, W / out_stride) logits before the sigmoid."""
        h = self.stem((x - self.mean) / self.std)
        skips = [h]
        for d in self.down:
            h = d(h)
            skips.append(h)
        for i, u in enumerate(self.up):
            s = skips[-2 - i]
            h = u(torch.cat([F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.mask_logits(x))
        return F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)


def load_explainer(path: str | Path, device: str | torch.device = "cpu") -> LTXExplainer:
    """Rebuild an explainer from PATH.json and load PATH.safetensors (never a pickle); eval mode on the device."""
    from safetensors.torch import load_file

    path = Path(path).with_suffix(".safetensors")
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise FileNotFoundError(f"LTX explainer checkpoint {path} is incomplete (weights or JSON config missing)")
    cfg = json.loads(cfg_path.read_text())
    if "explainer" not in cfg:
        raise ValueError(f"{cfg_path.name} is not an LTX explainer config (no 'explainer' key)")
    e = LTXExplainer(**cfg["explainer"])
    e.load_state_dict(load_file(str(path), device="cpu"))
    if "alpha" in cfg:  # the α it was trained with: finetuning uses the same objective
        e.alpha = float(cfg["alpha"])
    e.masking = cfg.get("masking", "soft")  # checkpoints from before the sampled masking were trained soft
    return e.to(device).eval()
