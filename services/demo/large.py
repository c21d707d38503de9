"""The larger demo (`exemplar demo --size 224 --arch mobilenet_v2`): the same SynthCXR story at a real image size
with the paper's architecture at its input size. The 64 px CPU demo (services.demo.steps) stays the default.

Steps: the SynthCXR dataset `demo-<size>` at native size and the baseline `demo-<size>-<arch>` trained at
input size = the image size. The shipped DDPM and GAN are 64 px models, so this demo registers no generator
(train one with `exemplar gen train` on the larger dataset).
"""
from __future__ import annotations

from core.registries import ARCHITECTURES
from services.data.datasets import get_dataset
from services.demo import steps as demo
from services.demo.steps import DemoStep

ARCH_SETTINGS = {  # per architecture: epochs, peak lr, batch size, builder keywords (core.registries.ARCHITECTURES)
    a.name: {"epochs": a.demo_epochs, "lr": a.lr, "batch_size": a.demo_batch_size, "arch_kwargs": dict(a.demo_kwargs)}
    for a in ARCHITECTURES}


def names(size: int, arch: str) -> tuple[str, str]:
    return f"demo-{int(size)}", f"demo-{int(size)}-{arch}"


def steps(size: int, arch: str) -> list[DemoStep]:
    """The demo's steps for an image size and architecture (ValueError for an unknown architecture)."""
    if arch not in ARCH_SETTINGS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCH_SETTINGS)}")
    size = int(size)
    ds_name, model_name = names(size, arch)
    synth = {**demo.DEMO_SYNTH, "name": ds_name, "size": size}
    base = {**{k: v for k, v in demo.BASELINE.items() if k not in ("arch_kwargs", "threads")}, **ARCH_SETTINGS[arch],
            "arch": arch, "name": model_name, "input_size": size}

    def existing_dataset(state: dict) -> dict | None:
        try:
            d = get_dataset(ds_name)
        except ValueError:
            return None
        man = (d.get("meta") or {}).get("synthcxr") or {}
        if any(man.get(k) != synth[k] for k in ("n", "size", "confounder", "seed")):
            raise ValueError(f"a dataset named {ds_name!r} exists but is not this demo's SynthCXR; rename or remove it")
        return {"dataset_id": d["id"], "name": d["name"], "root": d["root"], "counts": d["counts"], "created": False}

    return [
        DemoStep("dataset", f"SynthCXR demo dataset at {size} px", "data.synth", lambda st: dict(synth),
                 existing_dataset, 1.0),
        DemoStep("baseline", f"baseline {arch} at {size} px", "train",
                 lambda st: {**base, "dataset": st["dataset"]["dataset_id"]}, demo.existing_model(model_name), 8.0),
    ]
