"""Your own classifier (issue 21): GradCAM throughput on imported networks, side by side in one run, and the memory
of a large explanation.

Throughput (images/s) per network, on the same images and batch size, the rows taking turns in every repeat:
  bound      a batched inference forward of the imported model (torch.no_grad)
  ours       core.explain.explain(..., 'gradcam') through the target-layer hook + every localisation metric
  grad-cam   pytorch-grad-cam's GradCAM on the same layer (with the token reshape for a ViT), as its README shows
Goals: ours ≥ 0.9× bound and ≥ 2.5× grad-cam (densenet121, resnet50, vit_b_16 at 224 px, 256 images, 2 threads).

--rss: peak RSS of the explain job's process explaining 2,000 SynthCXR images at 224 px with an imported
densenet121 (a dataset and the import are made first, in another process). Goal ≤ 2 GB.
Usage: python bench/byom.py [--archs torchvision:densenet121,...] [--size 224] [--n 256] [--batch 32]
       [--threads 2] [--repeats 2] [--device cpu|cuda|auto] [--rss] [--rss-n 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.explain import explain  # noqa: E402
from core.metrics.localisation import localisation_metrics  # noqa: E402
from core.models.imported import IMAGENET, ImportedClassifier, build_network  # noqa: E402
from core.models.target import TargetSpec, candidate_layers, choose_target, to_grid  # noqa: E402

ARCHS = "torchvision:densenet121,torchvision:resnet50,torchvision:vit_b_16"


def imported(arch: str, size: int, dev: torch.device) -> ImportedClassifier:
    """A random-weight network wrapped as an import is (head made non-zero), its target chosen by the rule."""
    torch.manual_seed(0)
    built = build_network(arch, 4, 3, size)
    for m in built.net.modules():
        if isinstance(m, torch.nn.Linear) and not m.weight.detach().any():
            torch.nn.init.normal_(m.weight, std=0.02)
    model = ImportedClassifier(built.net, arch, 3, size, *IMAGENET, None, built.kwargs)
    layer = choose_target(candidate_layers(model.net, model, size, 1))
    model.set_target(TargetSpec(layer.name, layer.layout, layer.prefix))
    return model.to(dev).eval()


def timed(fns: dict, n: int, dev: torch.device, repeats: int, warm) -> dict[str, float]:
    """Best-of-repeats images/s per row after a one-batch warm-up each; rows take turns in every repeat."""
    for k in fns:
        warm[k]()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rates[k].append(n / (time.perf_counter() - t))
    return {k: max(v) for k, v in rates.items()}


def rows_for(model, x, lung, marker, batch: int):
    """(rows, one-batch warm-ups) for one network."""
    from pytorch_grad_cam import GradCAM

    spec = model.target
    aspect = x.shape[-1] / x.shape[-2]
    oracle = GradCAM(model=model, target_layers=[model.get_submodule(spec.name)],
                     reshape_transform=None if spec.layout == "nchw"
                     else (lambda o: to_grid(o, spec.layout, spec.prefix, aspect)))
    batches = [slice(i, i + batch) for i in range(0, x.shape[0], batch)]

    def bound(bs=batches):
        with torch.no_grad():
            for b in bs:
                model(x[b])

    def ours(bs=batches):
        for b in bs:
            e, logits = explain(model, x[b], None, "gradcam", return_logits=True)
            m = localisation_metrics(e, lung[b], marker[b], 0.5)
            logits.softmax(1)
            torch.stack(list(m.values())).cpu()

    def grad_cam(bs=batches):
        for b in bs:
            oracle(input_tensor=x[b], targets=None)

    fns = {"bound": bound, "ours": ours, "grad-cam": grad_cam}
    warm = {k: (lambda f=f: f(batches[:1])) for k, f in fns.items()}
    return fns, warm


def throughput(args, dev) -> list[dict]:
    out = []
    x = torch.rand(args.n, 1, args.size, args.size, device=dev)
    lung = torch.rand(args.n, args.size, args.size, device=dev) > 0.6
    marker = torch.rand(args.n, args.size, args.size, device=dev) > 0.95
    print(f"# imported networks at {args.size} px, {args.n} images, batch {args.batch}, {args.threads} threads, "
          f"device {dev}, torch {torch.__version__}, {platform.machine()}")
    print(f"{'network':<26}{'target layer':<40}{'bound':>8}{'ours':>8}{'grad-cam':>10}{'÷ bound':>9}"
          f"{'÷ grad-cam':>11}")
    for arch in args.archs.split(","):
        model = imported(arch, args.size, dev)
        fns, warm = rows_for(model, x, lung, marker, args.batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = timed(fns, args.n, dev, args.repeats, warm)
        rb, rg = r["ours"] / r["bound"], r["ours"] / r["grad-cam"]
        print(f"{arch:<26}{model.target_layer:<40}{r['bound']:>8.2f}{r['ours']:>8.2f}{r['grad-cam']:>10.2f}"
              f"{rb:>9.2f}{rg:>11.2f}", flush=True)
        out.append({"arch": arch, "target_layer": model.target_layer, "images_per_s": r, "ratio_bound": rb,
                    "ratio_grad_cam": rg})
        del model, fns, warm
    met_b = all(o["ratio_bound"] >= 0.9 for o in out)
    met_g = all(o["ratio_grad_cam"] >= 2.5 for o in out)
    rb = ", ".join(f"{o['ratio_bound']:.2f}" for o in out)
    rg = ", ".join(f"{o['ratio_grad_cam']:.2f}" for o in out)
    print(f"goal ours ≥ 0.9× bound: {'met' if met_b else 'NOT met'} ({rb}); "
          f"goal ours ≥ 2.5× pytorch-grad-cam: {'met' if met_g else 'NOT met'} ({rg})")
    return out


def rss_prepare(home: str, n: int, size: int) -> int:
    """A SynthCXR dataset of n images at `size` px and an imported random-weight densenet121; returns its id."""
    from services.data.datasets import synth_dataset
    from services.models.model_import import import_model

    os.environ["EXEMPLAR_HOME"] = home
    synth_dataset("big", n=n, size=size, confounder=0.9, seed=0, user_id=None)
    torch.manual_seed(0)
    import torchvision
    from safetensors.torch import save_file

    net = torchvision.models.densenet121(num_classes=4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, f"{home}/d.safetensors")
    return import_model("torchvision:densenet121", f"{home}/d.safetensors", "big", user_id=None,
                        input_size=size).model_id


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that high-water mark
    over from the parent across fork + exec, so a child of a large process reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_explain(home: str, model_id: int, batch: int) -> dict:
    """Run the explain use case on every image; report this process's peak RSS."""
    from services.explanations.explaining import run_explain

    os.environ["EXEMPLAR_HOME"] = home
    t = time.perf_counter()
    res = run_explain(model_id, "gradcam", batch_size=batch, user_id=None)
    peak = _peak_rss_mb()
    return {"n": res["summary"]["n"], "seconds": time.perf_counter() - t, "peak_rss_mb": peak}


def rss(args) -> dict:
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "EXEMPLAR_HOME": home, "EXEMPLAR_USER": "bench", "OMP_NUM_THREADS": str(args.threads)}
        prep = subprocess.run(me + ["--rss-prepare", home, "--rss-n", str(args.rss_n), "--size", str(args.size)],
                              env=env, capture_output=True, text=True, check=True)
        mid = int(prep.stdout.strip().splitlines()[-1])
        run = subprocess.run(me + ["--rss-child", home, "--model", str(mid), "--batch", str(args.batch)],
                             env=env, capture_output=True, text=True, check=True)
        res = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"# explain job, imported densenet121, {res['n']} images at {args.size} px, batch {args.batch}: "
          f"{res['seconds']:.0f} s, peak RSS {res['peak_rss_mb']:.0f} MB (goal ≤ 2048 MB: "
          f"{'met' if res['peak_rss_mb'] <= 2048 else 'NOT met'})")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default=ARCHS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rss", action="store_true", help="also measure the 2,000-image explanation's peak RSS")
    ap.add_argument("--rss-only", action="store_true")
    ap.add_argument("--rss-n", type=int, default=2000)
    ap.add_argument("--rss-prepare", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_prepare:
        print(rss_prepare(args.rss_prepare, args.rss_n, args.size))
        return
    if args.rss_child:
        print(json.dumps(rss_explain(args.rss_child, args.model, args.batch)))
        return
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    out = {"throughput": [] if args.rss_only else throughput(args, dev)}
    if args.rss or args.rss_only:
        out["rss"] = rss(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), **out}, indent=2))


if __name__ == "__main__":
    main()
