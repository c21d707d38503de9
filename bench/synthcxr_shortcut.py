"""SynthCXR: are the classes learnable from the lungs alone, and is the marker the easier shortcut?

Trains a tiny simple_cnn (CPU) on three views of the same SynthCXR set and prints per-epoch accuracy on val,
the iid test and test_shifted (marker corner random):
  full           the images as generated (marker + lungs)
  marker_blanked the four corner squares where markers can lie set to black in every image (lungs only)
  marker_only    everything but those corner squares set to black (marker only)
Usage: OMP_NUM_THREADS=1 python bench/synthcxr_shortcut.py [--n 2400] [--epochs 6] [--seed 0]
Writes $EXEMPLAR_HOME/bench/synthcxr_shortcut.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.data import synthcxr
from core.models import create_model


def views(d: synthcxr.SynthCXR) -> dict[str, np.ndarray]:
    box = synthcxr.corner_boxes(d.images.shape[-1])
    blanked = d.images.copy()
    blanked[:, box] = 0
    only = d.images.copy()
    only[:, ~box] = 0
    return {"full": d.images, "marker_blanked": blanked, "marker_only": only}


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((pred == y).float().mean())


def run(images: np.ndarray, d: synthcxr.SynthCXR, epochs: int, seed: int, lr: float, width: int) -> list[dict]:
    torch.manual_seed(seed)
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    y = torch.from_numpy(d.labels)
    idx = {s: torch.from_numpy(np.flatnonzero(d.splits == s)) for s in synthcxr.SPLITS}
    model = create_model("simple_cnn", num_classes=4, width=width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    rows = []
    tr = idx["train"]
    for ep in range(1, epochs + 1):
        model.train()
        t0 = time.time()
        perm = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rows.append({"epoch": ep, "seconds": round(time.time() - t0, 2),
                     **{s: round(accuracy(model, x[idx[s]], y[idx[s]]), 4) for s in ("val", "test", "test_shifted")}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--confounder", type=float, default=0.9)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--views", default="full,marker_blanked,marker_only")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    d = synthcxr.generate(a.n, a.size, a.confounder, a.seed)
    gen_s = time.time() - t0
    print(f"SynthCXR n={a.n} size={a.size} p={a.confounder}: generated in {gen_s:.2f}s "
          f"(torch threads {torch.get_num_threads()})")
    out = {"args": vars(a), "generate_seconds": round(gen_s, 3), "views": {}}
    v = views(d)
    for name in a.views.split(","):
        rows = run(v[name], d, a.epochs, a.seed, a.lr, a.width)
        out["views"][name] = rows
        print(f"\n{name}\n{'epoch':>5} {'val':>6} {'test':>6} {'shifted':>8} {'s/epoch':>8}")
        for r in rows:
            print(f"{r['epoch']:>5} {r['val']:>6.3f} {r['test']:>6.3f} {r['test_shifted']:>8.3f} {r['seconds']:>8.1f}")
    home = Path(os.environ.get("EXEMPLAR_HOME", "var"))
    (home / "bench").mkdir(parents=True, exist_ok=True)
    (home / "bench" / "synthcxr_shortcut.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
