"""The COVID-19 Radiography scale (issue 17): a SynthCXR of --n images (21,165 by default) at --size px (256),
written to disk in the COVID-19 Radiography layout and imported at its native size, in a throwaway EXEMPLAR_HOME.

Prints:
  synth + import      seconds to write the tree, seconds to import it (decode, check, hash, array cache)
  array cache         size of the cache file on disk (images + lung / lesion / marker masks, uint8)
  explanation run     MobileNetV2 at --input-size (224) px on the first --explain-n images (default all; random
                      weights: throughput only, the metrics mean nothing), --threads CPU threads, batch --batch:
                      images/s against the batched inference forward of the same model at the same size, and the
                      run's peak resident memory (a separate process; maps written batch by batch, cache
                      memory-mapped and re-mapped every few thousand images). Goals: ≥ 0.9 × forward, peak ≤ 2 GB.
                      With --gallery-arch (e.g. simple_cnn) a cheap model explains all --n images in a separate
                      process too (its peak memory shows what grows with n), so the gallery and report are timed
                      at full size on a 2-core machine where MobileNetV2 at 224 px runs at a few images/s.
  gallery             cold first page, warm first page, sort change, filter change, next page (server render
                      through AppTest, as bench/gallery_render.py does). Goals: cold ≤ 1 s, the rest ≤ 0.3 s.
  report              the before / after report (compare + HTML) for a parent and a child model, seconds.
Writes JSON to --json (default $EXEMPLAR_HOME/bench/scale.json).
Usage: python bench/scale.py [--n 21165] [--size 256] [--input-size 224] [--threads 2] [--batch 32] [--home DIR]
       [--explain-n 512] [--gallery-arch simple_cnn --gallery-input-size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
GOALS = {"cold first page": 1.0, "warm first page": 0.3, "sort change": 0.3, "filter change": 0.3, "next page": 0.3}


def build_dataset(a) -> dict:
    """Write the SynthCXR tree and import it at native size; returns timings and the cache size."""
    from core.data import synthcxr
    from services.data.datasets import cache_path
    from services.data.importing import import_dataset
    from services.platform.settings import get_settings

    root = get_settings().path("datasets") / "scale"
    t = time.perf_counter()
    if not (root / "synthcxr.json").exists():
        synthcxr.write_tree(root, a.n, a.size, 0.9, a.seed)
    synth_s = time.perf_counter() - t
    t = time.perf_counter()
    res = import_dataset(root, "covid-radiography", "scale", user_id=None)
    import_s = time.perf_counter() - t
    cache = cache_path(res["dataset_id"])
    return {"dataset_id": res["dataset_id"], "synth_s": round(synth_s, 2), "import_s": round(import_s, 2),
            "cache_bytes": cache.stat().st_size, "image_size": a.size, "n": a.n}


def register_models(dataset_id: int, a, arch: str = "mobilenet_v2", input_size: int | None = None) -> tuple[int, int]:
    """A model of `arch` at input_size (seeded random weights) and a child with slightly moved weights."""
    import torch

    from core.data.synthcxr import CLASSES
    from core.models import create_model
    from services.models.registry import register_model, save_checkpoint_dir

    ids = []
    for k in range(2):
        torch.manual_seed(a.seed)
        input_size = input_size or a.input_size
        kw = {"small_input": False} if arch == "mobilenet_v2" else {}
        model = create_model(arch, num_classes=4, in_chans=1, input_size=input_size, **kw)
        if k:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
        cfg = {"arch": arch, "num_classes": 4, "in_chans": 1, "arch_kwargs": kw,
               "classes": list(CLASSES), "image_size": a.size, "input_size": input_size, "dataset_id": dataset_id}
        ids.append(register_model(name=f"scale-{arch}-{k}", arch=arch, checkpoint=save_checkpoint_dir(model, cfg),
                                  dataset_id=dataset_id, parent_id=ids[0] if k else None, config=cfg))
    return ids[0], ids[1]


def explain_child(model_id: int, a, limit: int | None = None) -> dict:
    """Run the explanation in its own process (so its peak resident memory is its own) and time the forward."""
    cmd = [sys.executable, __file__, "--_explain", str(model_id), "--threads", str(a.threads), "--batch",
           str(a.batch), "--forward-n", str(a.forward_n)] + (["--explain-n", str(limit)] if limit else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"explanation process failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _explain_main(model_id: int, a) -> None:
    """Inside the child process: the explain job's work, then the batched forward on the same images."""
    import numpy as np
    import torch

    from services.data.datasets import load_arrays
    from services.explanations.explaining import run_explain
    from services.models.registry import get_model, load_classifier

    torch.set_num_threads(a.threads)
    res = run_explain(model_id, "gradcam", batch_size=a.batch, limit=a.explain_n, user_id=None)
    peak_kb = _peak_rss_kb()
    model, _ = load_classifier(model_id, "cpu")
    arr = load_arrays(get_model(model_id)["dataset_id"], mmap=True)
    n = min(a.forward_n, len(arr))
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, n, a.batch):
            x = torch.from_numpy(np.ascontiguousarray(arr.images[s:s + a.batch])).float().div_(255.0)[:, None]
            model(x).softmax(1)
    fwd = n / (time.perf_counter() - t)
    s = res["summary"]
    print(json.dumps({"run_id": res["run_id"], "n": s["n"], "explain_img_s": s["images_per_s"],
                      "forward_img_s": round(fwd, 1), "ratio": round(s["images_per_s"] / fwd, 3),
                      "peak_rss_mb": round(peak_kb / 1024, 1), "map_size": res["map_size"],
                      "image_size": res["image_size"], "seconds": s["seconds"]}))


def _peak_rss_kb() -> int:
    """This process's own peak resident memory (VmHWM): ru_maxrss would carry the forking parent's peak across
    exec, so a bench parent that imported the dataset in memory would be charged to the explanation run."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def time_report(parent: int, child: int) -> dict:
    from services.retraining.report import compare, report_html

    t = time.perf_counter()
    compare(parent, child)
    c = time.perf_counter() - t
    t = time.perf_counter()
    html = report_html(parent, child)
    return {"compare_s": round(c, 3), "html_s": round(time.perf_counter() - t, 3), "html_bytes": len(html)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=21_165, help="images (the COVID-19 Radiography Database has 21,165)")
    ap.add_argument("--size", type=int, default=256, help="image side in px")
    ap.add_argument("--input-size", type=int, default=224, help="MobileNetV2 input size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="explanation batch (its activations dominate peak memory)")
    ap.add_argument("--forward-n", type=int, default=1024, help="images in the timed forward pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explain-n", type=int, default=None, help="images in the MobileNetV2 run (default all)")
    ap.add_argument("--gallery-arch", default=None, help="a cheap arch (simple_cnn) whose runs cover all --n images "
                                                         "for the gallery and report timings")
    ap.add_argument("--gallery-input-size", type=int, default=64)
    ap.add_argument("--skip-gallery", action="store_true")
    ap.add_argument("--home", default=None, help="reuse (or build once into) this EXEMPLAR_HOME")
    ap.add_argument("--json", default=None)
    ap.add_argument("--_explain", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._explain is not None:
        _explain_main(a._explain, a)
        return
    os.environ["EXEMPLAR_HOME"] = a.home or tempfile.mkdtemp(prefix="exemplar-bench-scale-")
    os.environ.setdefault("EXEMPLAR_DEVICE", "cpu")
    import torch

    torch.set_num_threads(a.threads)
    out: dict = {"args": {k: v for k, v in vars(a).items() if not k.startswith("_")}}
    out["dataset"] = d = build_dataset(a)
    print(f"# SynthCXR {a.n} images at {a.size} px: synth {d['synth_s']} s, import {d['import_s']} s "
          f"({a.n / max(d['import_s'], 1e-9):.0f} images/s), array cache {d['cache_bytes'] / 2**20:.0f} MiB")
    from services.explanations.explaining import latest_run

    parent, child = register_models(d["dataset_id"], a)
    out["explain"] = e = explain_child(parent, a, a.explain_n)
    print(f"# explanation run: MobileNetV2 {a.input_size} px, {e['n']} images, {a.threads} thread(s), batch {a.batch}: "
          f"{e['explain_img_s']} images/s vs forward {e['forward_img_s']} images/s (ratio {e['ratio']}, goal ≥ 0.9); "
          f"peak RSS {e['peak_rss_mb']} MB (goal ≤ 2048); maps stored at {e['map_size']} for {e['image_size']} px")
    if a.gallery_arch:  # the gallery and report at full n, from a cheap model's runs over every image
        parent, child = register_models(d["dataset_id"], a, a.gallery_arch, a.gallery_input_size)
        out["explain_full"] = f = explain_child(parent, a)
        print(f"# explanation run over all {f['n']} images: {a.gallery_arch} {a.gallery_input_size} px: "
              f"{f['explain_img_s']} images/s, peak RSS {f['peak_rss_mb']} MB (goal ≤ 2048), maps {f['map_size']}")
    out["explain_child"] = explain_child(child, a, None if a.gallery_arch else a.explain_n)
    assert latest_run(child) is not None
    if not a.skip_gallery:
        import gallery_render

        print("# gallery (server render, AppTest)")
        out["gallery"] = gallery_render.print_times(gallery_render.time_gallery(a.repeats), GOALS)
    out["report"] = r = time_report(parent, child)
    print(f"# before/after report: compare {r['compare_s']} s, HTML {r['html_s']} s ({r['html_bytes'] / 1024:.0f} KiB)")
    path = Path(a.json) if a.json else Path(os.environ["EXEMPLAR_HOME"]) / "bench" / "scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"# JSON: {path}")


if __name__ == "__main__":
    main()
