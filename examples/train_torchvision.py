"""Train a torchvision ResNet-18 on Exemplar's demo images with plain PyTorch, and save its state dict.

This is what a radiology group's own training code looks like: it does not import Exemplar. Its result is
imported with `exemplar models import` (see the README, "Your own classifier"). The images are the PNG folders of
a dataset built by `exemplar data synth`: ROOT/<class>/images/*.png, grey, in [0, 255].

Train it on images of its own (a second synthetic set, `--seed 1`), not on the demo's: the images Exemplar holds out
(val, test, test_shifted) must not have been seen in training, or the figures it shows are optimistic.

    exemplar data synth --name outside --n 1200 --size 64 --seed 1 --json    # prints its root folder
    python examples/train_torchvision.py --root var/datasets/outside --epochs 3 --out resnet18_demo.pt
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]  # ImageNet normalisation: import with --normalize imagenet
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def load_folder(root: Path, size: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every ROOT/<class>/images/*.png as (N, 3, size, size) in [0, 1] (grey repeated) and labels."""
    classes = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c / "images").glob("*.png"))]
    random.Random(0).shuffle(files)
    files = files[:limit] if limit else files
    x = np.stack([np.asarray(Image.open(f).convert("L").resize((size, size)), np.float32) / 255.0 for f, _ in files])
    x = torch.from_numpy(x)[:, None].repeat(1, 3, 1, 1)
    return x, torch.tensor([i for _, i in files]), classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="dataset folder with <class>/images/*.png")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="side the network sees (import with --input-size)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    ap.add_argument("--out", type=Path, default=Path("resnet18_demo.pt"))
    args = ap.parse_args()

    torch.manual_seed(0)
    x, y, classes = load_folder(args.root, args.size, args.limit)
    net = torchvision.models.resnet18(num_classes=len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x))
        total = 0.0
        for i in range(0, len(x), args.batch_size):
            b = order[i:i + args.batch_size]
            loss = F.cross_entropy(net((x[b] - MEAN) / STD), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(b)
        print(f"epoch {epoch + 1}: loss {total / len(x):.3f}")
    torch.save(net.state_dict(), args.out)
    print(f"saved {args.out} (classes in output order: {','.join(classes)})")


if __name__ == "__main__":
    main()
