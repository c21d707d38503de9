"""GradCAM throughput, side by side in one run on the same model, images and batch size (images/s):

  bound        a batched inference forward of the model (torch.no_grad) — what explaining cannot beat
  ours         core.explain.explain(..., 'gradcam') + every localisation metric on the device (the explain job's
               per-batch work: maps upsampled and normalised, AR/AP/F1/soft AR/mass/RRA/pointing/WR)
  ours maps    core.explain.explain(..., 'gradcam') alone
  grad-cam     pytorch-grad-cam's GradCAM on the same target layer (core.models.target), batched, used as its
               README shows (parameters trainable as in a normal model)
  captum loop  Captum's LayerGradCam one image at a time (the naive per-image loop)

Goals (issue 5): ours ≥ 0.8× bound and ≥ 2.5× grad-cam. Also checks that our maps equal Captum's.
--rows picks the rows (default: all below 128 px; bound,ours,ours_maps from 128 px on, where the comparison rows
cost minutes and gigabytes, issue 17); MobileNetV2 takes its standard stride-2 stem from 128 px on.
Usage: python bench/gradcam_throughput.py [--arch mobilenet_v2] [--size 64] [--n 512] [--batch 64] [--threads 2]
       [--device cpu|cuda|auto] [--repeats 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import torch

from core.explain import explain, explaining, upsample_normalise
from core.explain.gradcam import gradcam_captum
from core.models.target import target_module
from core.metrics.localisation import localisation_metrics
from core.models import create_model


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed_interleaved(fns: dict, counts: dict, dev: torch.device, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` images/s per method after one warm-up each; the methods take turns in every repeat so
    that load from other processes hits them alike."""
    for fn in fns.values():
        fn()
    sync(dev)
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(dev)
            rates[k].append(counts[k] / (time.perf_counter() - t))
    return {k: max(v) for k, v in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=512, help="images per timed pass")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-n", type=int, default=64, help="images for the per-image Captum loop")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--rows", default=None, help="comma list of bound,ours,ours_maps,grad_cam,captum_loop")
    args = ap.parse_args()
    rows = (args.rows.split(",") if args.rows else
            (["bound", "ours", "ours_maps"] if args.size >= 128 else ["bound", "ours", "ours_maps", "grad_cam",
                                                                      "captum_loop"]))
    kw = {"small_input": args.size < 128} if args.arch == "mobilenet_v2" else {}
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    model = create_model(args.arch, num_classes=4, in_chans=1, **kw).to(dev).eval()
    x = torch.rand(args.n, 1, args.size, args.size, device=dev)
    lung = torch.rand(args.n, args.size, args.size, device=dev) > 0.6
    marker = torch.rand(args.n, args.size, args.size, device=dev) > 0.95
    batches = [slice(i, i + args.batch) for i in range(0, args.n, args.batch)]

    def bound():
        with torch.no_grad():
            for b in batches:
                model(x[b])

    def ours_maps():
        for b in batches:
            explain(model, x[b], None, "gradcam", return_logits=True)

    def ours():
        for b in batches:
            e, logits = explain(model, x[b], None, "gradcam", return_logits=True)
            m = localisation_metrics(e, lung[b], marker[b], 0.5)
            logits.softmax(1)
            torch.stack(list(m.values())).cpu()  # what the job copies back per batch

    gcam = None
    if "grad_cam" in rows:
        from pytorch_grad_cam import GradCAM

        gc_model = create_model(args.arch, num_classes=4, in_chans=1, **kw).to(dev)
        gc_model.load_state_dict(model.state_dict())
        gc_model.eval()
        gcam = GradCAM(model=gc_model, target_layers=[target_module(gc_model)])

    def gradcam_pkg():
        for b in batches:
            gcam(input_tensor=x[b], targets=None)

    loop_x = x[: args.loop_n]

    def captum_loop():
        with explaining(model):
            for i in range(len(loop_x)):
                a = gradcam_captum(model, loop_x[i: i + 1], None)
                upsample_normalise(a.raw, args.size)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fns = {"bound": bound, "ours": ours, "ours_maps": ours_maps, "grad_cam": gradcam_pkg,
               "captum_loop": captum_loop}
        fns = {k: v for k, v in fns.items() if k in rows}
        counts = {k: (args.loop_n if k == "captum_loop" else args.n) for k in fns}
        res = timed_interleaved(fns, counts, dev, args.repeats)
        # correctness on the first batch: ours vs Captum's LayerGradCam (same target = predicted class)
        xb = x[: min(args.batch, args.n)]
        with explaining(model):
            ref = upsample_normalise(gradcam_captum(model, xb, None).raw, args.size)
        diff = float((explain(model, xb, None, "gradcam") - ref).abs().max())
    names = {"bound": "inference forward (bound)", "ours": "ours: GradCAM + metrics", "ours_maps": "ours: GradCAM maps",
             "grad_cam": "pytorch-grad-cam", "captum_loop": "Captum per-image loop"}
    print(f"# {args.arch} {args.size}x{args.size}, batch {args.batch}, {args.n} images, device {dev}, "
          f"{args.threads} threads, torch {torch.__version__}, {platform.machine()}")
    print(f"{'method':<28}{'images/s':>10}{'× bound':>10}{'× grad-cam':>12}")
    nan = float("nan")
    for k, v in res.items():
        print(f"{names[k]:<28}{v:>10.1f}{v / res.get('bound', nan):>10.2f}{v / res.get('grad_cam', nan):>12.2f}")
    goal_b, goal_g = res.get("ours", nan) / res.get("bound", nan), res.get("ours", nan) / res.get("grad_cam", nan)
    print(f"goal ≥ 0.8× bound: {goal_b:.2f} {'met' if goal_b >= 0.8 else 'NOT met'}; "
          f"goal ≥ 2.5× pytorch-grad-cam: {goal_g:.2f} " + ('met' if goal_g >= 2.5 else 'NOT met' if goal_g == goal_g
                                                            else '(row not run)'))
    print(f"max |ours − Captum LayerGradCam| on normalised maps: {diff:.2e}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "device": str(dev), "images_per_s": res,
                       "ratio_bound": goal_b, "ratio_grad_cam": goal_g, "max_diff_captum": diff}, fh, indent=2)


if __name__ == "__main__":
    main()
