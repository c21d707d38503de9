"""GAN counterfactuals (GCI) as use cases: the `gen.train --kind gan` body, loading, the shipped asset, the images'
known attributes for the search, the extra result fields (attributes_changed) and the bench's GAN rows.

A GAN lives in a folder $EXEMPLAR_HOME/generators/<uuid>/ (model.safetensors with G.* and D.*, model.json,
provenance.json, samples.png), written to a temp folder and renamed; its `models` row has kind "gan".
The attribute vector is the class one-hot plus, for SynthCXR imports (images.meta holds the generator's
attributes), marker corner, lesion sides and lesion opacity (core.generative.gan.synthcxr_spec).
"""
from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from services.platform.settings import from_stored, resolve_device  # i17: paths relative to EXEMPLAR_HOME
from db.models import Model
from services.counterfactuals.generators import dataset_hash, generators_root, get_generator, list_generators
from services.counterfactuals.generators import register_generator
from services.data.datasets import get_dataset, list_images, load_arrays
from services.platform.database import session

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SHIPPED_GAN = ASSETS / "gan_synthcxr64"
CHECKPOINT = "model.safetensors"
TRAIN_DEFAULTS = {"steps": 4000, "batch_size": 16, "lr": 2e-4, "width": 24, "skips": 1}
GRID_ROWS = 6


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- attributes


def _metas(dataset_id: int) -> list[dict]:
    rows = sorted(list_images(dataset_id), key=lambda im: int(im["index"]))
    return [im.get("meta") or {} for im in rows]


def dataset_attributes(dataset_id: int, arr=None):
    """(spec, attrs float32 (N, dim) in the array cache's row order, source) for a dataset."""
    from core.generative.gan import class_only_spec, has_synthcxr_attributes, synthcxr_rows, synthcxr_spec

    arr = arr if arr is not None else load_arrays(dataset_id)
    classes = list(arr.classes)
    metas = _metas(dataset_id)
    if len(metas) == len(arr) and has_synthcxr_attributes(metas):
        spec = synthcxr_spec(classes)
        return spec, spec.encode(synthcxr_rows(classes, arr.labels, metas)), "synthcxr attributes"
    spec = class_only_spec(classes)
    return spec, np.eye(len(classes), dtype=np.float32)[np.asarray(arr.labels, dtype=int)], "class only"


def image_attributes(spec, image: dict, classes: list[str]) -> np.ndarray | None:
    """The known attribute vector (1, dim) of one image row under a GAN's spec, or None when it cannot be built
    (other classes, or attributes the image's metadata lacks: the discriminator estimates them then)."""
    from core.generative.gan import synthcxr_rows

    names = [g.name for g in spec.groups]
    if "class" not in names or list(spec["class"].values) != list(classes):
        return None
    if names == ["class"]:
        return spec.encode([{"class": classes[int(image["label"])]}])
    try:
        return spec.encode(synthcxr_rows(classes, [image["label"]], [image.get("meta") or {}]))
    except (KeyError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------------------------------- training


class _Stop(Exception):
    """Raised from the progress callback when max_minutes is reached."""


def train_gan_job(ctx, ds: dict) -> dict:
    """Train the AttGAN-like GAN on the dataset's train split, save it atomically and register it (kind gan).

    params: steps (4000), seed, batch_size (16), lr (2e-4), width (24), skips (1), max_minutes,
    sample_every (grid PNG every N steps), name, device, command (the CLI line, for the provenance).
    """
    import torch

    from core.generative.gan import (GANBundle, GANTrainConfig, build_gan, count_params, gan_config, reconstruct,
                                     sample_grid)
    p = dict(ctx.params)
    t0 = time.monotonic()
    o = _gan_settings(p)
    steps, seed = o["steps"], o["seed"]
    device = resolve_device(p.get("device"))
    arr = load_arrays(ds["id"])
    tr, held = _train_and_held(arr, ds)
    spec, attrs, source = dataset_attributes(ds["id"], arr)
    torch.manual_seed(seed)
    G, D = build_gan(spec, size=arr.size, width=o["width"], skips=o["skips"])
    nbytes = (count_params(G) + count_params(D)) * 4
    cfg = GANTrainConfig(steps=steps, batch_size=o["batch_size"], lr=o["lr"], seed=seed,
                         log_every=max(10, min(100, steps // 20)))
    progress_dir = generators_root() / ".progress" / f"job-{ctx.job_id}"
    progress_dir.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.0, f"training a GAN ({nbytes / 1e6:.1f} MB, attributes: {', '.join(g.name for g in spec.groups)}) "
                      f"on {len(tr)} images, {steps} steps, {device}", force=True)
    history, stopped_early, ran = _fit_gan(ctx, G, D, arr, (tr, held), attrs, spec, cfg, device, o, progress_dir)
    ctx.progress(0.92, "reconstruction of held-out images and the sample grid", force=True)
    rec = reconstruct(G, arr.images[held], attrs[held])
    x = arr.images[held][:, None].astype(np.float32) / 255.0
    rec_l1 = float(np.abs(rec - x).mean())
    mean_l1 = float(np.abs(x - arr.images[tr].mean(0) / 255.0).mean())
    grid, labels = sample_grid(G, arr.images[held[:GRID_ROWS]], attrs[held[:GRID_ROWS]], spec)
    name = p.get("name") or f"{ds['name']}-gan"
    bundle = GANBundle(G.cpu(), D.cpu(), spec, gan_config(G, spec, D))
    provenance = {
        "kind": "gan", "name": name, "command": p.get("command") or f"gen.train job {json.dumps(p, default=str)}",
        "created_at": _now(), "seed": seed, "dataset": ds["name"], "dataset_id": ds["id"],
        "dataset_hash": dataset_hash(ds["id"]), "train_split": "train", "train_images": int(len(tr)),
        "image_size": arr.size, "attributes": spec.to_json(), "attributes_source": source,
        "steps_requested": steps, "training_steps": ran, "stopped_early": stopped_early,
        "batch_size": o["batch_size"], "lr": o["lr"], "width": o["width"], "skips": o["skips"],
        "loss_weights": {"rec": cfg.lambda_rec, "cls_g": cfg.lambda_cls_g, "cls_d": cfg.lambda_cls_d,
                         "adv": cfg.lambda_adv}, "losses": history[-1] if history else {}, "loss_curve": history,
        "heldout_rec_l1": rec_l1, "heldout_mean_image_l1": mean_l1, "seconds": round(time.monotonic() - t0, 1),
        "device": str(device), "torch": torch.__version__, "weights_bytes": nbytes,
        "sample_grid": "samples.png", "sample_grid_columns": labels,
    }
    folder = _save_gan_folder(generators_root(), bundle, grid, provenance)
    metrics = {"training_steps": ran, "heldout_rec_l1": rec_l1, "heldout_mean_image_l1": mean_l1,
               "losses": history[-1] if history else {}}
    gid = register_generator(name=name, kind="gan", arch="attgan", folder=folder, dataset_id=ds["id"],
                             config=bundle.config, metrics=metrics, job_id=ctx.job_id, created_by=ctx.user_id)
    shutil.rmtree(progress_dir, ignore_errors=True)
    ctx.progress(1.0, f"GAN #{gid}: {ran} steps, held-out reconstruction L1 {rec_l1:.4f} "
                      f"(mean image {mean_l1:.4f})", force=True)
    return {"generator_id": gid, "kind": "gan", "name": name, "dataset_id": ds["id"], "folder": str(folder),
            "training_steps": ran, "final_loss": (history[-1] if history else {}).get("rec_l1"),
            "losses": history[-1] if history else {}, "heldout_rec_l1": rec_l1, "heldout_mean_image_l1": mean_l1,
            "attributes": [g.name for g in spec.groups], "weights_bytes": nbytes,
            "seconds": round(time.monotonic() - t0, 1), "device": str(device)}


def _gan_settings(p: dict) -> dict:
    """The training settings of a `gen.train` job's params, TRAIN_DEFAULTS filling the gaps."""
    steps = int(p.get("steps") or TRAIN_DEFAULTS["steps"])
    if steps < 1:
        raise ValueError("--steps must be at least 1")
    return {"steps": steps, "seed": int(p.get("seed") or 0),
            "batch_size": int(p.get("batch_size") or TRAIN_DEFAULTS["batch_size"]),
            "lr": float(p.get("lr") or TRAIN_DEFAULTS["lr"]), "width": int(p.get("width") or TRAIN_DEFAULTS["width"]),
            "skips": int(p.get("skips") if p.get("skips") is not None else TRAIN_DEFAULTS["skips"]),
            "max_minutes": p.get("max_minutes"), "sample_every": int(p.get("sample_every") or max(100, steps // 5))}


def _train_and_held(arr, ds: dict) -> tuple[np.ndarray, np.ndarray]:
    """The train split's indices, and the held-out images (val, else test, else train) the GAN is judged on."""
    tr = arr.split_index("train")
    if len(tr) == 0:
        raise ValueError(f"dataset {ds['name']!r} has no train split")
    held = arr.split_index("val")
    held = held if len(held) else arr.split_index("test")
    held = held if len(held) else tr
    return tr, held


def _fit_gan(ctx, G, D, arr, splits: tuple, attrs, spec, cfg, device, o: dict, progress_dir: Path
             ) -> tuple[list[dict], bool, int]:
    """Train G and D, reporting progress and a sample grid every `sample_every` steps, stopping at max_minutes;
    returns (loss history, stopped early, steps run)."""
    from core.generative.gan import sample_grid, train_gan

    tr, held = splits
    sample_every, max_minutes = o["sample_every"], o["max_minutes"]
    deadline = time.monotonic() + float(max_minutes) * 60 if max_minutes else None
    ran = [0]

    def on_step(step: int, n: int, metrics: dict | None) -> None:
        ran[0] = step
        if metrics is not None:
            ctx.progress(0.9 * step / n, f"step {step}/{n} rec L1 {metrics['rec_l1']:.4f}", metrics=metrics)
        else:
            ctx.progress(0.9 * step / n, f"step {step}/{n}")
        if step % sample_every == 0 and step < n:
            grid, _ = sample_grid(G, arr.images[held[:GRID_ROWS]], attrs[held[:GRID_ROWS]], spec)
            G.train()
            path = progress_dir / f"samples_{step:06d}.png"
            path.write_bytes(_png(grid))
            ctx.progress(0.9 * step / n, f"step {step}/{n}: sample grid", force=True,
                         metrics={"step": step, "samples": str(path)})
        if deadline is not None and time.monotonic() > deadline:
            raise _Stop()

    try:
        return train_gan(G, D, arr.images[tr], attrs[tr], spec, cfg, device=device, progress=on_step), False, ran[0]
    except _Stop:
        G.eval()
        D.eval()
        return [], True, ran[0]


def _save_gan_folder(root: Path, bundle, grid: np.ndarray, provenance: dict) -> Path:
    """Write the checkpoint, the sample grid and the provenance into a new folder under `root`, all or nothing."""
    from core.models.checkpoint import save_checkpoint

    tmp = root / f".tmp-{uuid.uuid4().hex}"
    folder = root / uuid.uuid4().hex
    tmp.mkdir(parents=True)
    try:
        save_checkpoint(bundle.modules(), bundle.config, tmp / CHECKPOINT)
        (tmp / "samples.png").write_bytes(_png(grid))
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2))
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_gan_generator(row: dict, device: str | None = None):
    """The GANBundle of a gan row on the device."""
    from core.generative.gan import load_gan

    if row["kind"] != "gan":
        raise ValueError(f"generator {row['id']} is a {row['kind']}, not a gan")
    return load_gan(Path(row["checkpoint"]) / CHECKPOINT, device=resolve_device(device))


# ------------------------------------------------------------------------------------------- the shipped GAN


def register_shipped_gan(dataset_id: int, folder: str | Path = SHIPPED_GAN, *, user_id: int | None,
                         progress: Callable | None = None) -> dict:
    """Register the shipped GAN for a dataset (idempotent); refused when image size or classes differ."""
    from sqlalchemy import select

    folder = Path(folder)
    if not (folder / "provenance.json").is_file() or not (folder / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no shipped GAN at {folder} (provenance.json or {CHECKPOINT} missing)")
    prov = json.loads((folder / "provenance.json").read_text())
    cfg = json.loads((folder / CHECKPOINT).with_suffix(".json").read_text())
    ds = get_dataset(dataset_id)
    if int(cfg["size"]) != int(ds["image_size"]):
        raise ValueError(f"the shipped GAN is for {cfg['size']} px images; dataset {dataset_id} has {ds['image_size']} px")
    classes = next((g["values"] for g in cfg["attributes"] if g["name"] == "class"), [])
    if list(classes) != list(ds["classes"]):
        raise ValueError(f"the shipped GAN knows classes {classes}; dataset {dataset_id} has {ds['classes']}")
    with session() as s:
        for m in s.scalars(select(Model).where(Model.kind == "gan", Model.dataset_id == int(dataset_id))):
            if Path(from_stored(m.checkpoint)).resolve() == folder.resolve():
                return {"generator_id": m.id, "kind": "gan", "created": False}
    metrics = {"training_steps": prov.get("training_steps"), "heldout_rec_l1": prov.get("heldout_rec_l1"),
               "losses": prov.get("losses"), "shipped": True}
    gid = register_generator(name=prov.get("name", "synthcxr64-gan"), kind="gan", arch="attgan", folder=folder,
                             dataset_id=int(dataset_id), config={**cfg, "shipped": True}, metrics=metrics,
                             created_by=user_id)
    if progress:
        progress(1.0, f"registered the shipped GAN as generator #{gid}")
    return {"generator_id": gid, "kind": "gan", "created": True}


def demo_params(state: dict) -> dict:
    return {"dataset": state["dataset"]["dataset_id"], "kind": "gan", "from_assets": SHIPPED_GAN.name}


def demo_existing(state: dict) -> dict | None:
    """The demo's GAN when already registered (or a note when this checkout ships none), else None."""
    if not (SHIPPED_GAN / "provenance.json").is_file():
        return {"skipped": f"no shipped GAN in {SHIPPED_GAN}"}
    for g in list_generators(int(state["dataset"]["dataset_id"]), "gan"):
        if Path(g["checkpoint"]).resolve() == SHIPPED_GAN.resolve():
            return {"generator_id": g["id"], "kind": "gan", "created": False}
    return None


# ------------------------------------------------------------------------------------------- the counterfactual job


def method_options(bundle, image: dict, classes: list[str], n: int, opts: dict) -> dict:
    """The `gan` method's options for one image: its known attributes (repeated n times) unless given."""
    out = dict(opts)
    if out.get("attributes") is None:
        a = image_attributes(bundle.spec, image, classes)
        out["attributes"] = None if a is None else np.repeat(a, n, 0)
    return out


def result_extras(out, best: int, flipped: bool, category: str | None) -> dict:
    """Extra result fields of a GAN counterfactual: attributes_changed (words), the mode and attribute source,
    generator passes; without a DDPM to score bits/dim the category is "unclassified" (never "counterfactual" on the
    flip alone, docs/architecture.md, Definitions)."""
    ps = out.config.get("per_sample") or {}
    extras = {"attributes_changed": list(ps.get("attributes_changed", [[]])[best]),
              "attributes_source": ps.get("attributes_source"), "gan_mode": out.config.get("mode"),
              "generator_passes": int((ps.get("generator_passes") or [0])[best]),
              "category": category, "category_basis": "bits/dim and flip"}
    if category is None or category == "unclassified":
        extras["category"] = "unclassified"
        extras["category_basis"] = "none (no DDPM for this dataset: bits/dim unknown)"
    return extras


# ------------------------------------------------------------------------------------------- bench


BENCH_ROWS = [("GAN (known attributes)", {"mode": "attributes"}), ("GAN (latent)", {"mode": "latent"})]


def bench_context(dataset_id: int, rows, device: str, generator_id: int | None = None) -> dict | None:
    """The bench's GAN: {'bundle', 'attrs' (len(rows), dim), 'generator_id'} for the given array-cache rows, or
    None when the dataset has no GAN."""
    row = get_generator(dataset_id, "gan", generator_id)
    if row is None:
        return None
    bundle = load_gan_generator(row, device)
    arr = load_arrays(dataset_id)
    images = {int(im["index"]): im for im in list_images(dataset_id)}
    attrs = []
    for r in np.asarray(rows):
        a = image_attributes(bundle.spec, images[int(r)], list(arr.classes))
        attrs.append(a[0] if a is not None else None)
    if any(a is None for a in attrs):
        import torch

        est = bundle.estimate_attributes(torch.from_numpy(arr.images[np.asarray(rows)]).float().div(255)[:, None])
        attrs = [a if a is not None else e for a, e in zip(attrs, est)]
    return {"bundle": bundle, "attrs": np.stack(attrs).astype(np.float32), "generator_id": row["id"]}
