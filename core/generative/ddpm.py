"""A small unconditional DDPM for 1-channel images (diffusers UNet2DModel + DDPMScheduler): build, train, sample, save.

Images live in [0, 1] outside this module and in [-1, 1] inside the diffusion model (to_model / from_model).
The default UNet is sized for CPU training at 64×64 (about 1.2 M parameters, under 5 MB of fp32 weights).
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

# UNet presets: block widths for the four resolution levels (1, 1/2, 1/4, 1/8); attention only in the mid block.
UNET_PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(8, 16, 16, 32), layers_per_block=1, norm_num_groups=8),
    "small": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=8),
    "base": dict(block_out_channels=(32, 64, 64, 128), layers_per_block=1, norm_num_groups=8),
}
MAX_WEIGHT_BYTES_64 = 15 * 1024 * 1024


def unet_config(size: int = 64, preset: str = "small", **overrides) -> dict:
    """UNet2DModel kwargs for a 1-channel size×size image (size 32–128, divisible by 8)."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r}; choose one of {', '.join(UNET_PRESETS)}")
    if not (32 <= size <= 128) or size % 8:
        raise ValueError(f"DDPM image size must be 32–128 and divisible by 8, got {size}")
    cfg = dict(sample_size=size, in_channels=1, out_channels=1, attention_head_dim=32,
               down_block_types=("DownBlock2D",) * 4, up_block_types=("UpBlock2D",) * 4, **UNET_PRESETS[preset])
    cfg.update(overrides)
    cfg["block_out_channels"] = tuple(cfg["block_out_channels"])
    return cfg


def scheduler_config(num_train_timesteps: int = 1000, beta_schedule: str = "linear") -> dict:
    """DDPMScheduler kwargs: ε-prediction, fixed-small (posterior) variance, x0 clipped to [-1, 1]."""
    return dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, beta_start=1e-4,
                beta_end=0.02, variance_type="fixed_small", clip_sample=True, prediction_type="epsilon")


def build_ddpm(size: int = 64, preset: str = "small", num_train_timesteps: int = 1000,
               **unet_overrides) -> tuple[UNet2DModel, DDPMScheduler]:
    return UNet2DModel(**unet_config(size, preset, **unet_overrides)), DDPMScheduler(**scheduler_config(num_train_timesteps))


def weight_bytes(unet: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in unet.parameters())


def to_model(x01: torch.Tensor) -> torch.Tensor:
    return x01 * 2.0 - 1.0


def from_model(xm: torch.Tensor) -> torch.Tensor:
    return ((xm + 1.0) / 2.0).clamp(0.0, 1.0)


def quantize01(x01: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to the 256 grey levels an 8-bit image can hold (what is stored and scored)."""
    return torch.round(x01.clamp(0, 1) * 255.0) / 255.0


def uint8_to_model(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, 1, H, W) → float (N, 1, H, W) in [-1, 1]."""
    t = torch.as_tensor(np.asarray(images))
    if t.ndim == 3:
        t = t[:, None]
    return t.float() / 127.5 - 1.0


def to_uint8(x01: torch.Tensor) -> np.ndarray:
    """[0, 1] tensor (N, 1, H, W) or (N, H, W) → uint8 (N, H, W)."""
    x = x01.detach().cpu()
    if x.ndim == 4:
        x = x[:, 0]
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8).numpy()


# ------------------------------------------------------------------ training


@dataclass
class TrainReport:
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)  # running (EMA) loss every `log_every` steps
    seconds: float = 0.0
    stopped_early: bool = False


class EMA:
    """Exponential moving average of weights with the usual warm-up (decay ramps from 0.1 to `decay`)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for pe, p in zip(self.model.parameters(), model.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


def train_ddpm(unet: UNet2DModel, scheduler: DDPMScheduler, images: np.ndarray, steps: int, *,
               batch_size: int = 32, lr: float = 3e-4, warmup: int = 100, ema_decay: float = 0.999,
               seed: int = 0, device: str | torch.device = "cpu", max_seconds: float | None = None,
               log_every: int = 10, progress: Callable[[int, float], None] | None = None,
               sample_every: int = 0, on_samples: Callable[[int, UNet2DModel], None] | None = None,
               ) -> tuple[UNet2DModel, TrainReport]:
    """Train ε-prediction (simple loss) on uint8 images (N, H, W); returns the EMA model and a report.

    progress(step, running_loss) is called every `log_every` steps (it may raise to cancel); on_samples(step,
    ema_model) every `sample_every` steps. max_seconds stops early (the report says how many steps ran).
    """
    if len(images) == 0:
        raise ValueError("no training images")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = uint8_to_model(images)  # (N, 1, H, W) on CPU; batches move to device
    unet.to(device).train()
    ema = EMA(unet, ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    T = scheduler.config.num_train_timesteps
    running, losses, t_start, step = None, [], time.monotonic(), 0
    stopped = False
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (batch_size,), generator=g)
        x0 = data[idx].to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, T, (batch_size,), generator=g).to(device)
        xt = scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(unet)
        lv = float(loss.detach())
        running = lv if running is None else 0.98 * running + 0.02 * lv
        if step % log_every == 0 or step == steps:
            losses.append(running)
            if progress:
                progress(step, running)
        if sample_every and on_samples and step % sample_every == 0 and step != steps:
            on_samples(step, ema.model)
        if max_seconds is not None and time.monotonic() - t_start > max_seconds:
            stopped = True
            break
    unet.eval()
    return ema.model.eval(), TrainReport(steps=step, final_loss=float(running), losses=losses,
                                         seconds=time.monotonic() - t_start, stopped_early=stopped)


# ------------------------------------------------------------------ sampling


def strided_timesteps(num_train_timesteps: int, n: int, start: int | None = None) -> list[int]:
    """n descending timesteps from `start` (default T−1) to 0, evenly spaced (a strided DDPM / DDIM grid)."""
    start = num_train_timesteps - 1 if start is None else int(start)
    if not 0 <= start < num_train_timesteps:
        raise ValueError(f"start timestep must be in [0, {num_train_timesteps - 1}], got {start}")
    n = max(1, min(int(n), start + 1))
    ts = np.unique(np.round(np.linspace(0, start, n)).astype(int))[::-1]
    return [int(t) for t in ts]


@torch.no_grad()
def sample(unet: UNet2DModel, scheduler: DDPMScheduler, n: int, steps: int = 50, seed: int = 0,
           device: str | torch.device = "cpu", batch_size: int = 64) -> torch.Tensor:
    """n unconditional samples in [0, 1] (n, 1, H, W) with a strided DDPM of `steps` steps."""
    sch = DDPMScheduler.from_config(scheduler.config)
    sch.set_timesteps(timesteps=strided_timesteps(sch.config.num_train_timesteps, steps))
    size = unet.config.sample_size
    out = []
    g = torch.Generator().manual_seed(seed)
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        x = torch.randn((b, unet.config.in_channels, size, size), generator=g).to(device)
        for t in sch.timesteps:
            eps = unet(x, t.to(device)).sample
            x = sch.step(eps, int(t), x, generator=g).prev_sample
        out.append(from_model(x).cpu())
    return torch.cat(out)


def grid_image(images: np.ndarray, nrow: int = 8, pad: int = 2):
    """uint8 (N, H, W) → a PIL grayscale grid."""
    from PIL import Image

    n, h, w = images.shape
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    canvas = np.zeros((rows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[k]
    return Image.fromarray(canvas, mode="L")


# ------------------------------------------------------------------ storage


def save_ddpm(unet: UNet2DModel, scheduler: DDPMScheduler, path: str | Path,
              extra_files: dict[str, bytes] | None = None) -> Path:
    """Write PATH/unet (safetensors + config), PATH/scheduler and extra files into a temp dir, then rename it
    to PATH (atomic on one filesystem). PATH must not exist yet."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists already")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is as readable as any checkpoint
    try:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_ddpm(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet2DModel, DDPMScheduler]:
    path = Path(path)
    if not (path / "unet" / "config.json").exists():
        raise FileNotFoundError(f"no DDPM at {path} (expected {path / 'unet' / 'config.json'})")
    unet = UNet2DModel.from_pretrained(path / "unet", use_safetensors=True, low_cpu_mem_usage=False).to(device).eval()
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    return unet, scheduler
