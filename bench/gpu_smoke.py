"""GPU smoke bench (issue 17): the CUDA path, run and measured in a few minutes on one GPU.

Rows (MobileNetV2, 4 classes, grayscale, random weights unless said; images/s or seconds):
  forward            batched inference forward at --size (batch --batch), fp32 and bf16 autocast + channels_last
  explain            GradCAM + every localisation metric (the explain job's per-batch work), same settings;
                     ratio explain / forward (goal ≥ 0.9)
  CE epoch           one epoch of plain cross-entropy training on --train-n images
  eXBL epoch         one epoch of the eXBL loss (CE + triplet explanation term, create_graph GradCAM) on the same
                     images; ratio eXBL / CE (goal ≤ 2.5)
  CF batch           one fast-preset diffusion counterfactual batch (shipped 64 px DDPM, when present)
  DDPM step          one DDPM training step (UNet forward + backward) at 64 px
Without CUDA it prints why it cannot run and exits 0 (the device selection itself is tested on CPU); --device cpu
forces a tiny CPU run of the same code. Writes JSON to --json (default $EXEMPLAR_HOME/bench/gpu_smoke.json).
Usage: python bench/gpu_smoke.py [--size 224] [--batch 256] [--n 2048] [--train-n 1024] [--device auto|cuda|cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pick(device: str):
    """The device to run on, or (None, reason) when the request cannot be met (no CUDA for auto / cuda)."""
    import torch

    if device == "cpu":
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        return None, ("no CUDA device here (torch.cuda.is_available() is False): the GPU smoke bench needs one. "
                      "Run it where a GPU is lent, or pass --device cpu for a tiny CPU run of the same code.")
    return torch.device("cuda"), None


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, n_items: int, dev, repeats: int = 3) -> float:
    """Best-of-repeats items/s after one warm-up."""
    fn()
    sync(dev)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        best = max(best, n_items / (time.perf_counter() - t))
    return best


def amp_ctx(dev, on: bool):
    import torch

    return torch.autocast(dev.type, dtype=torch.bfloat16) if on else nullcontext()


def model_for(dev, size: int, channels_last: bool):
    import torch

    from core.models import create_model

    torch.manual_seed(0)
    m = create_model("mobilenet_v2", num_classes=4, in_chans=1, input_size=size, small_input=size < 128).to(dev)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m.eval()


def explain_rows(dev, a) -> list[dict]:
    import torch

    from core.explain import explain
    from core.metrics.localisation import localisation_metrics

    x = torch.rand(a.batch, 1, a.size, a.size, device=dev)
    lung = torch.rand(a.batch, a.size, a.size, device=dev) > 0.5
    rows = []
    for amp, cl in ((False, False), (True, True)) if dev.type == "cuda" else ((False, False),):
        model = model_for(dev, a.size, cl)
        xb = x.contiguous(memory_format=torch.channels_last) if cl else x
        n_batches = max(1, a.n // a.batch)

        def fwd():
            with torch.no_grad(), amp_ctx(dev, amp):
                for _ in range(n_batches):
                    model(xb)

        def exp():
            for _ in range(n_batches):
                with amp_ctx(dev, amp):
                    e = explain(model, xb, None, "gradcam")
                localisation_metrics(e.float(), lung, None, 0.5)

        f, e = rate(fwd, n_batches * a.batch, dev), rate(exp, n_batches * a.batch, dev)
        rows.append({"precision": "bf16 + channels_last" if amp else "fp32", "forward_img_s": round(f, 1),
                     "explain_img_s": round(e, 1), "ratio": round(e / f, 3)})
    return rows


def training_rows(dev, a) -> dict:
    """One CE epoch and one eXBL epoch on the same images (seconds), fp32 and bf16 autocast."""
    import torch
    import torch.nn.functional as F

    x = torch.rand(a.train_n, 1, a.size, a.size, device=dev)
    y = torch.randint(0, 4, (a.train_n,), device=dev)
    out = {}
    for amp in (False, True) if dev.type == "cuda" else (False,):
        model = model_for(dev, a.size, amp).train()
        opt = torch.optim.AdamW(model.parameters(), 1e-4)

        def ce_epoch():
            for i in range(0, a.train_n, a.train_batch):
                with amp_ctx(dev, amp):
                    loss = F.cross_entropy(model(x[i:i + a.train_batch]), y[i:i + a.train_batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        method = _exbl_method(model, x[:2], y[:2])

        def exbl_epoch():
            for i in range(0, a.train_n, a.train_batch):
                xb, yb = x[i:i + a.train_batch], y[i:i + a.train_batch]
                with amp_ctx(dev, amp):
                    loss, _ = method.loss(model, xb, yb, None)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        ce = 1.0 / rate(ce_epoch, 1, dev, repeats=1)
        ex = 1.0 / rate(exbl_epoch, 1, dev, repeats=1)
        out["bf16" if amp else "fp32"] = {"ce_epoch_s": round(ce, 3), "exbl_epoch_s": round(ex, 3),
                                          "ratio": round(ex / ce, 3)}
    return out


def _exbl_method(model, x2, y2):
    """The reference eXBL loss (core.xbl.exbl.Exbl) with two fixed exemplar anchors taken from x2."""
    import torch

    from core.xbl import anchors, cam as _cam
    from core.xbl.exbl import Exbl

    m = Exbl()
    with torch.enable_grad():
        feats, logits = _cam.features_logits(model, x2)
        a = anchors(_cam.gradcam(feats, logits, y2, create_graph=False), x2, True).detach()
    m.p, m.q = a[0:1], a[1:2]
    return m


def generative_rows(dev, a) -> dict:
    """One DDPM training step at 64 px and one fast-preset counterfactual batch (when the shipped DDPM exists)."""
    import torch

    out: dict = {}
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError as exc:
        return {"skipped": f"diffusers missing: {exc}"}
    folder = ROOT / "assets" / "ddpm_synthcxr64"
    if (folder / "unet").is_dir():
        unet = UNet2DModel.from_pretrained(str(folder / "unet")).to(dev)
        sched = DDPMScheduler.from_pretrained(str(folder / "scheduler"))
    else:
        unet = UNet2DModel(sample_size=64, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                           down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3).to(dev)
        sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    x0 = torch.rand(a.ddpm_batch, 1, 64, 64, device=dev) * 2 - 1

    def step():
        t = torch.randint(0, sched.config.num_train_timesteps, (a.ddpm_batch,), device=dev)
        noise = torch.randn_like(x0)
        with amp_ctx(dev, dev.type == "cuda"):
            loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out["ddpm_step_s"] = round(1.0 / rate(step, 1, dev, repeats=2), 4)
    out["ddpm_batch"] = a.ddpm_batch
    out["cf_batch"] = _cf_batch(dev, unet, sched, a)
    return out


def _cf_batch(dev, unet, sched, a) -> dict:
    """The fast preset's pass count on a batch: guided reverse steps from the noised input (XAIDIFF form)."""
    import torch

    try:
        from core.counterfactual import xaidiff
    except ImportError as exc:
        return {"skipped": str(exc)}
    model = model_for(dev, 64, False)
    x = torch.rand(a.cf_batch, 1, 64, 64, device=dev)
    tgt = torch.ones(a.cf_batch, dtype=torch.long, device=dev)
    t = time.perf_counter()
    out = xaidiff.diffusion_method(model, x, tgt, (unet.eval(), sched), device=dev, preset="fast")
    sync(dev)
    return {"seconds": round(time.perf_counter() - t, 3), "batch": a.cf_batch,
            "unet_passes": int(max(out.unet_passes)) if len(out.unet_passes) else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Without CUDA it says so and exits 0; --device cpu runs tiny sizes.")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n", type=int, default=2048, help="images per timed explanation / forward pass")
    ap.add_argument("--train-n", type=int, default=1024)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--ddpm-batch", type=int, default=64)
    ap.add_argument("--cf-batch", type=int, default=16)
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev, why = pick(a.device)
    if dev is None:
        print(why)
        return
    if dev.type == "cpu":  # a tiny run of the same code (the numbers say nothing about a GPU)
        a.size, a.batch, a.n, a.train_n, a.train_batch, a.ddpm_batch, a.cf_batch = 64, 8, 8, 16, 8, 2, 1
    import torch

    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    res = {"device": name, "args": vars(a), "explain": explain_rows(dev, a)}
    print(f"# {name} · MobileNetV2 {a.size} px · batch {a.batch}")
    print(f"{'precision':<24}{'forward img/s':>15}{'explain img/s':>15}{'ratio':>8}  goal ≥ 0.9")
    for r in res["explain"]:
        print(f"{r['precision']:<24}{r['forward_img_s']:>15.1f}{r['explain_img_s']:>15.1f}{r['ratio']:>8.2f}")
    res["training"] = training_rows(dev, a)
    print(f"{'precision':<24}{'CE epoch s':>15}{'eXBL epoch s':>15}{'ratio':>8}  goal ≤ 2.5 ({a.train_n} images)")
    for k, r in res["training"].items():
        print(f"{k:<24}{r['ce_epoch_s']:>15.3f}{r['exbl_epoch_s']:>15.3f}{r['ratio']:>8.2f}")
    res["generative"] = generative_rows(dev, a)
    print(f"generative: {json.dumps(res['generative'])}")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"# total {res['seconds']} s")
    out = Path(a.json) if a.json else Path(os.environ.get("EXEMPLAR_HOME", "var")) / "bench" / "gpu_smoke.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
