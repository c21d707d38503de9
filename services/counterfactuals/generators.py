"""Generators (DDPM, GAN): the `gen.train` job, the registry rows (models.kind = kind), ε per (dataset, DDPM).

GEN_KINDS maps a generator kind to the 'module:function' of its trainer and of its loader, so the worker imports
torch lazily and adding a kind (the GAN issue adds "gan") is one line. A trainer takes (ctx, dataset dict) and
returns the job result with at least generator_id; a loader takes (row, device) and returns what the matching
counterfactual method expects as `generator` (for ddpm: (unet, scheduler)).

A DDPM lives in a folder $EXEMPLAR_HOME/generators/<uuid>/ (unet/ and scheduler/ via diffusers save_pretrained
with safetensors, provenance.json, samples.png), written to a temp folder and renamed; its `models` row points at
the folder and holds ε (the 95th-percentile bits/dim of held-out real images) in metrics["bpd"].
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import shlex
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from db.models import Image, Model
from services.platform.database import read_session, session
from services.platform.settings import from_stored, get_settings, resolve_device, to_stored  # noqa: F401  (i17: paths relative to EXEMPLAR_HOME)
from services.data.datasets import get_dataset, load_arrays
from services.models.registry import update_metrics


@dataclass(frozen=True)
class GenKind:
    train: str   # 'module:function(ctx, dataset) -> result'
    load: str    # 'module:function(row, device) -> generator object'


GEN_KINDS: dict[str, GenKind] = {
    "ddpm": GenKind(train="services.counterfactuals.generators:train_ddpm_job", load="services.counterfactuals.generators:load_ddpm_generator"),
    "gan": GenKind(train="services.counterfactuals.gan:train_gan_job", load="services.counterfactuals.gan:load_gan_generator"),
}
ASSETS = Path(__file__).resolve().parents[2] / "assets"
SHIPPED_DDPM = ASSETS / "ddpm_synthcxr64"
BPD_SPLIT = "val"          # held out from DDPM training (which uses `train`)
BPD_QUANTILE = 95.0
DEFAULT_BPD_IMAGES = 128
DEFAULT_BPD_TERMS = 32
TMP_PREFIX = ".tmp-"


def generators_root() -> Path:
    return get_settings().path("generators")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dataset_hash(dataset_id: int) -> str:
    """sha256 over the dataset's (path, content sha256, label, split) rows, sorted by path."""
    with read_session() as s:
        rows = s.execute(select(Image.path, Image.sha256, Image.label, Image.split)
                         .where(Image.dataset_id == int(dataset_id)).order_by(Image.path)).all()
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\n".encode())
    return h.hexdigest()


def pixels_hash(dataset_id: int) -> str:
    """sha256 over the decoded pixels, labels and splits in path order: unlike dataset_hash it does not change when
    the same images are re-encoded (another PNG encoder or zlib level), so a shipped ε stays valid for them."""
    import numpy as np

    arr = load_arrays(dataset_id)
    order = np.argsort(arr.paths) if len(arr.paths) == len(arr.images) else np.arange(len(arr.images))
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(arr.images[order]).tobytes())
    h.update(np.asarray(arr.labels)[order].astype(np.int64).tobytes())
    h.update("\n".join(map(str, np.asarray(arr.splits)[order])).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- registry rows


def _row_dict(m: Model) -> dict:
    return {"id": m.id, "name": m.name, "kind": m.kind, "arch": m.arch, "dataset_id": m.dataset_id,
            "checkpoint": from_stored(m.checkpoint), "config": m.config or {}, "metrics": m.metrics or {}, "job_id": m.job_id,
            "created_by": m.created_by, "created_at": m.created_at.isoformat() if m.created_at else None}


def register_generator(*, name: str, kind: str, arch: str, folder: str | Path, dataset_id: int | None,
                       config: dict, metrics: dict, job_id: int | None = None, created_by: int | None = None) -> int:
    """Insert the `models` row of a complete generator folder (refused when the folder lacks its provenance)."""
    folder = Path(folder).resolve()
    if not (folder / "provenance.json").is_file():
        raise FileNotFoundError(f"generator folder {folder} is incomplete (no provenance.json); not registered")
    with session() as s:
        row = Model(name=name, kind=kind, arch=arch, dataset_id=dataset_id, checkpoint=to_stored(folder), config=config,
                    metrics=metrics, job_id=job_id, created_by=created_by)
        s.add(row)
        s.flush()
        return row.id


def get_generator(dataset_id: int | None, kind: str = "ddpm", generator_id: int | None = None) -> dict | None:
    """A generator row: by id, else the newest of `kind` for the dataset (whose folder still exists), else None."""
    with read_session() as s:
        if generator_id is not None:
            m = s.get(Model, int(generator_id))
            if m is None or m.kind not in GEN_KINDS:
                raise ValueError(f"no generator {generator_id}")
            if m.kind != kind:
                raise ValueError(f"model {generator_id} is a {m.kind} generator, not {kind}")
            return _row_dict(m)
        q = select(Model).where(Model.kind == kind).order_by(Model.id.desc())
        if dataset_id is not None:
            q = q.where(Model.dataset_id == int(dataset_id))
        for m in s.scalars(q):
            if Path(from_stored(m.checkpoint)).exists():
                return _row_dict(m)
    return None


def list_generators(dataset_id: int | None = None, kind: str | None = None) -> list[dict]:
    with read_session() as s:
        q = select(Model).where(Model.kind.in_(list(GEN_KINDS))).order_by(Model.id)
        if kind:
            q = q.where(Model.kind == kind)
        if dataset_id is not None:
            q = q.where(Model.dataset_id == int(dataset_id))
        return [_row_dict(m) for m in s.scalars(q)]


def update_generator_metrics(generator_id: int, metrics: dict) -> None:
    """Merge metrics (ε, realism) into a generator's row: a generator is a registry row like a classifier."""
    update_metrics(int(generator_id), metrics)


def load_ddpm_generator(row: dict, device: str | None = None):
    """(unet, scheduler) of a ddpm row on the device."""
    from core.generative.ddpm import load_ddpm

    if row["kind"] != "ddpm":
        raise ValueError(f"generator {row['id']} is a {row['kind']}, not a ddpm")
    return load_ddpm(row["checkpoint"], device=resolve_device(device))


# ------------------------------------------------------------------------------------------- ε per (dataset, DDPM)


def compute_bpd_threshold(unet, scheduler, dataset_id: int, n_images: int = DEFAULT_BPD_IMAGES,
                          terms: int | None = DEFAULT_BPD_TERMS, seed: int = 0, device: str = "cpu",
                          progress: Callable | None = None) -> dict:
    """ε = the 95th percentile of bits/dim of up to n_images held-out (val) real images, with the estimator used."""
    import numpy as np

    from core.counterfactual.taxonomy import bpd_threshold
    from core.generative.bpd import bits_per_dim

    arr = load_arrays(dataset_id)
    idx = arr.split_index(BPD_SPLIT)
    if len(idx) == 0:
        idx = arr.split_index("test")
    if len(idx) == 0:
        raise ValueError(f"dataset {dataset_id} has no val or test images to set the bits/dim threshold from")
    rng = np.random.default_rng(seed)
    if len(idx) > n_images:
        idx = np.sort(rng.choice(idx, n_images, replace=False))
    split = BPD_SPLIT if len(arr.split_index(BPD_SPLIT)) else "test"
    said = [-1.0]

    def prog(f: float) -> None:
        if progress and (f >= 1.0 or f - said[0] >= 0.1):  # about ten messages
            said[0] = f
            progress(f, f"bits/dim of {len(idx)} held-out images ({f:.0%})")

    res = bits_per_dim(unet, scheduler, arr.images[idx], terms=terms, seed=seed, device=device, progress=prog)
    eps = bpd_threshold(res.bpd, BPD_QUANTILE)
    return {"eps": eps, "quantile": BPD_QUANTILE, "split": split, "n": int(len(idx)), "terms": terms,
            "estimator": res.estimator, "seed": seed, "real_mean": float(res.bpd.mean()),
            "real_median": float(np.median(res.bpd)), "dataset_id": int(dataset_id),
            "dataset_hash": dataset_hash(dataset_id), "pixels_hash": pixels_hash(dataset_id), "computed_at": _now()}


def bpd_settings(row: dict) -> dict:
    """The estimator settings per-example bits/dim must share with ε (terms, seed)."""
    b = (row.get("metrics") or {}).get("bpd") or {}
    return {"terms": b.get("terms", DEFAULT_BPD_TERMS), "seed": b.get("seed", 0)}


def ensure_bpd_threshold(row: dict, dataset_id: int, device: str | None = None, progress: Callable | None = None) -> dict:
    """ε for (dataset, DDPM): stored in the row's metrics["bpd"] (or its per-dataset map), computed once."""
    m = row.get("metrics") or {}
    b = m.get("bpd")
    if b and int(b.get("dataset_id", -1)) == int(dataset_id):
        return b
    other = (m.get("bpd_by_dataset") or {}).get(str(dataset_id))
    if other:
        return other
    unet, sch = load_ddpm_generator(row, device)
    b = compute_bpd_threshold(unet, sch, dataset_id, device=resolve_device(device), progress=progress,
                              **({"terms": b["terms"], "seed": b["seed"]} if b else {}))
    if m.get("bpd") is None:
        update_generator_metrics(row["id"], {"bpd": b})
    else:
        update_generator_metrics(row["id"], {"bpd_by_dataset": {**(m.get("bpd_by_dataset") or {}), str(dataset_id): b}})
    return b


PURIFY = {"t_p": 100, "steps": 5, "seed": 0, "n": 64}  # the purification-drop statistic and its ε sample


def ensure_purify_threshold(row: dict, dataset_id: int, model_id: int, classifier, device: str | None = None) -> dict:
    """ε_drop for (DDPM, classifier): the 95th percentile of the purification drop on held-out (val) real images,
    stored in the DDPM row's metrics["purify"][model id], computed once (core/counterfactual/purify.py)."""
    import numpy as np
    import torch

    from core.counterfactual.purify import purification_drop

    key = f"{dataset_id}:{model_id}"
    have = ((row.get("metrics") or {}).get("purify") or {}).get(key)
    if have:
        return have
    arr = load_arrays(dataset_id)
    idx = arr.split_index(BPD_SPLIT)
    if len(idx) == 0:
        idx = arr.split_index("test")
    idx = np.sort(np.random.default_rng(PURIFY["seed"]).choice(idx, min(PURIFY["n"], len(idx)), replace=False))
    unet, sch = load_ddpm_generator(row, device)
    x = torch.from_numpy(arr.images[idx]).float().div(255.0)[:, None]
    d = purification_drop(unet, sch, classifier, x, PURIFY["t_p"], PURIFY["steps"], PURIFY["seed"],
                          device=resolve_device(device))
    info = {"eps": float(np.percentile(d, BPD_QUANTILE)), "quantile": BPD_QUANTILE, "n": int(len(idx)),
            "real_mean": float(d.mean()), **{k: PURIFY[k] for k in ("t_p", "steps", "seed")}, "computed_at": _now()}
    fresh = get_generator(dataset_id, "ddpm", row["id"]) or row
    merged = {**((fresh.get("metrics") or {}).get("purify") or {}), key: info}
    update_generator_metrics(row["id"], {"purify": merged})
    return info


# ------------------------------------------------------------------------------------------- training


def gen_train_job(ctx) -> dict:
    """`gen.train` job: params dataset, kind (ddpm | gan | …), steps, seed, …; dispatched through GEN_KINDS."""
    kind = ctx.params.get("kind", "ddpm")
    if kind not in GEN_KINDS:
        raise ValueError(f"unknown generator kind {kind!r}; choose one of {', '.join(sorted(GEN_KINDS))}")
    ds = get_dataset(ctx.params["dataset"])
    if ctx.params.get("from_assets"):  # register a shipped generator instead of training one (exemplar demo)
        if kind == "gan":
            return _resolve("services.counterfactuals.gan:register_shipped_gan")(
                ds["id"], ASSETS / ctx.params["from_assets"], user_id=ctx.user_id, progress=ctx.progress)
        if kind != "ddpm":
            raise ValueError(f"no shipped-asset registration for kind {kind!r} here")
        return register_shipped_ddpm(ds["id"], ASSETS / ctx.params["from_assets"], user_id=ctx.user_id,
                                     progress=ctx.progress)
    return _resolve(GEN_KINDS[kind].train)(ctx, ds)


def _resolve(ref: str) -> Callable:
    mod, fn = ref.split(":")
    return getattr(importlib.import_module(mod), fn)


def load_generator(row: dict, device: str | None = None):
    """The generator object of a registry row, through its kind's loader."""
    if row["kind"] not in GEN_KINDS:
        raise ValueError(f"model {row['id']} is not a generator (kind {row['kind']!r})")
    return _resolve(GEN_KINDS[row["kind"]].load)(row, device)


def _png(pil) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def train_ddpm_job(ctx, ds: dict) -> dict:
    """Train the small DDPM on the dataset's train split, save it atomically, compute ε, register the row.

    params: steps (default 2000), seed, batch_size (32), lr (3e-4), preset (UNet size: tiny|small|base),
    max_minutes (stop early, the provenance records the steps that ran), sample_every (grid PNG every N steps),
    bpd_images, bpd_terms, name, device, command (the CLI line, for the provenance).
    """
    import torch

    import diffusers
    from core.generative.ddpm import (MAX_WEIGHT_BYTES_64, build_ddpm, grid_image, sample, save_ddpm, to_uint8,
                                      weight_bytes)

    p = dict(ctx.params)
    t0 = time.monotonic()
    o = _ddpm_settings(p)
    steps, seed, batch_size, lr, preset = o["steps"], o["seed"], o["batch_size"], o["lr"], o["preset"]
    device = resolve_device(p.get("device"))
    if steps < 1:
        raise ValueError("--steps must be at least 1")
    arr = load_arrays(ds["id"])
    tr = arr.split_index("train")
    if len(tr) == 0:
        raise ValueError(f"dataset {ds['name']!r} has no train split")
    size = arr.size
    torch.manual_seed(seed)
    unet, scheduler = build_ddpm(size, preset)
    nbytes = weight_bytes(unet)
    if size <= 64 and nbytes > MAX_WEIGHT_BYTES_64:
        raise ValueError(f"UNet preset {preset!r} has {nbytes / 1e6:.1f} MB of weights (limit 15 MB at 64×64)")
    progress_dir = generators_root() / ".progress" / f"job-{ctx.job_id}"
    progress_dir.mkdir(parents=True, exist_ok=True)
    # training takes 85 % of the bar, ε the rest
    ctx.progress(0.0, f"training a {preset} DDPM ({nbytes / 1e6:.1f} MB) on {len(tr)} images, {steps} steps, {device}",
                 force=True)

    ema, rep = _fit_ddpm(ctx, unet, scheduler, arr.images[tr], o, device, progress_dir)
    ctx.progress(0.86, "sampling the final grid", force=True)
    grid = grid_image(to_uint8(sample(ema, scheduler, int(p.get("grid_n") or 16),
                                      steps=int(p.get("grid_steps") or 50), seed=seed, device=device)), nrow=8)
    ctx.progress(0.88, "bits/dim of held-out real images (ε)", force=True)
    bpd = compute_bpd_threshold(ema, scheduler, ds["id"], n_images=int(p.get("bpd_images") or DEFAULT_BPD_IMAGES),
                                terms=int(p.get("bpd_terms") or DEFAULT_BPD_TERMS), seed=seed, device=device,
                                progress=lambda f, msg: ctx.progress(0.88 + 0.1 * f, msg))
    name = p.get("name") or f"{ds['name']}-ddpm"
    provenance = {
        "kind": "ddpm", "name": name, "command": p.get("command") or f"gen.train job {json.dumps(p, default=str)}",
        "created_at": _now(), "seed": seed, "dataset": ds["name"], "dataset_id": ds["id"],
        "dataset_hash": dataset_hash(ds["id"]), "train_split": "train", "train_images": int(len(tr)),
        "image_size": size, "steps_requested": steps, "training_steps": rep.steps, "stopped_early": rep.stopped_early,
        "batch_size": batch_size, "lr": lr, "ema_decay": 0.999, "final_loss": rep.final_loss,
        "loss_curve": [round(x, 5) for x in rep.losses], "seconds": round(rep.seconds, 1), "device": str(device),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "unet_preset": preset,
        "weights_bytes": nbytes, "sample_grid": "samples.png", "bpd": bpd,
    }
    folder = generators_root() / uuid.uuid4().hex
    save_ddpm(ema.cpu(), scheduler, folder, extra_files={
        "provenance.json": json.dumps(provenance, indent=2).encode(), "samples.png": _png(grid)})
    config = {"unet_preset": preset, "image_size": size, "num_train_timesteps": scheduler.config.num_train_timesteps}
    metrics = {"final_loss": rep.final_loss, "training_steps": rep.steps, "bpd": bpd}
    gid = register_generator(name=name, kind="ddpm", arch=f"unet2d-{preset}", folder=folder, dataset_id=ds["id"],
                             config=config, metrics=metrics, job_id=ctx.job_id, created_by=ctx.user_id)
    shutil.rmtree(progress_dir, ignore_errors=True)
    ctx.progress(1.0, f"generator #{gid}: {rep.steps} steps, loss {rep.final_loss:.4f}, ε {bpd['eps']:.3f} bits/dim",
                 force=True)
    return {"generator_id": gid, "kind": "ddpm", "name": name, "dataset_id": ds["id"], "folder": str(folder),
            "training_steps": rep.steps, "final_loss": rep.final_loss, "bpd_eps": bpd["eps"],
            "bpd_estimator": bpd["estimator"], "weights_bytes": nbytes, "seconds": round(time.monotonic() - t0, 1),
            "device": str(device)}


def _ddpm_settings(p: dict) -> dict:
    """The training settings of a `gen.train` job's params (kind ddpm), with their defaults."""
    steps = int(p.get("steps") or 2000)
    return {"steps": steps, "seed": int(p.get("seed") or 0), "batch_size": int(p.get("batch_size") or 32),
            "lr": float(p.get("lr") or 3e-4), "preset": p.get("preset") or "small", "max_minutes": p.get("max_minutes"),
            "sample_every": int(p.get("sample_every") or max(100, steps // 5))}


def _fit_ddpm(ctx, unet, scheduler, images, o: dict, device, progress_dir: Path):
    """Train the UNet (85 % of the progress bar), a sample grid every `sample_every` steps, stopping at max_minutes;
    returns (the EMA model, the training report)."""
    from core.generative.ddpm import grid_image, sample, to_uint8, train_ddpm

    steps, seed, max_minutes = o["steps"], o["seed"], o["max_minutes"]

    def on_step(step: int, loss: float) -> None:
        ctx.progress(0.85 * step / steps, f"step {step}/{steps} loss {loss:.4f}",
                     metrics={"step": step, "loss": round(loss, 5)} if step % max(10, steps // 100) == 0 else None)

    def on_samples(step: int, model) -> None:
        imgs = to_uint8(sample(model, scheduler, 16, steps=50, seed=seed, device=device))
        path = progress_dir / f"samples_{step:06d}.png"
        grid_image(imgs, nrow=8).save(path)
        ctx.progress(0.85 * step / steps, f"step {step}/{steps}: sample grid", force=True,
                     metrics={"step": step, "samples": str(path)})

    return train_ddpm(unet, scheduler, images, steps, batch_size=o["batch_size"], lr=o["lr"], seed=seed, device=device,
                      max_seconds=float(max_minutes) * 60 if max_minutes else None, progress=on_step,
                      sample_every=o["sample_every"], on_samples=on_samples)


# ------------------------------------------------------------------------------------------- shipped assets


def register_shipped_ddpm(dataset_id: int, folder: str | Path = SHIPPED_DDPM, *, user_id: int | None,
                          progress: Callable | None = None) -> dict:
    """Register the shipped DDPM for a dataset (idempotent). ε comes from its provenance when the dataset's hash
    matches the one it was computed on; otherwise it is computed now."""
    folder = Path(folder)
    prov_path = folder / "provenance.json"
    if not prov_path.is_file():
        raise FileNotFoundError(f"no shipped DDPM at {folder} (provenance.json missing)")
    prov = json.loads(prov_path.read_text())

    size = int(get_dataset(dataset_id)["image_size"])
    if prov.get("image_size") and int(prov["image_size"]) != size:
        raise ValueError(f"the shipped DDPM is for {prov['image_size']} px images; dataset {dataset_id} has {size} px")
    with session() as s:
        for m in s.scalars(select(Model).where(Model.kind == "ddpm", Model.dataset_id == int(dataset_id))):
            if Path(from_stored(m.checkpoint)).resolve() == folder.resolve():
                return {"generator_id": m.id, "created": False, "bpd_eps": (m.metrics or {}).get("bpd", {}).get("eps")}
    dhash = dataset_hash(dataset_id)
    b = prov.get("bpd") or {}
    metrics = {"final_loss": prov.get("final_loss"), "training_steps": prov.get("training_steps"), "shipped": True}
    if b and (b.get("dataset_hash") == dhash or (b.get("pixels_hash") and b["pixels_hash"] == pixels_hash(dataset_id))):
        metrics["bpd"] = {**b, "dataset_id": int(dataset_id)}
    gid = register_generator(name=prov.get("name", "synthcxr64-ddpm"), kind="ddpm",
                             arch=f"unet2d-{prov.get('unet_preset', 'small')}", folder=folder, dataset_id=dataset_id,
                             config={"unet_preset": prov.get("unet_preset"), "image_size": prov.get("image_size"),
                                     "shipped": True}, metrics=metrics, created_by=user_id)
    row = get_generator(dataset_id, "ddpm", gid)
    eps = ensure_bpd_threshold(row, dataset_id, progress=progress)["eps"]
    return {"generator_id": gid, "created": True, "bpd_eps": eps}


def command_line() -> str:
    """The CLI line as typed (for provenance)."""
    return shlex.join(["exemplar", *sys.argv[1:]])


# ------------------------------------------------------------------------------------------- the demo's step


def demo_params(state: dict) -> dict:
    """Params of the demo step that registers the shipped DDPM for the demo dataset."""
    return {"dataset": state["dataset"]["dataset_id"], "kind": "ddpm", "from_assets": SHIPPED_DDPM.name}


def demo_existing(state: dict) -> dict | None:
    """The demo's DDPM when already registered (or a note when this checkout ships none), else None."""
    if not (SHIPPED_DDPM / "provenance.json").is_file():
        return {"skipped": f"no shipped DDPM in {SHIPPED_DDPM}"}
    with read_session() as s:
        for m in s.scalars(select(Model).where(Model.kind == "ddpm",
                                               Model.dataset_id == int(state["dataset"]["dataset_id"]))):
            if Path(from_stored(m.checkpoint)).resolve() == SHIPPED_DDPM.resolve():
                return {"generator_id": m.id, "created": False, "bpd_eps": (m.metrics or {}).get("bpd", {}).get("eps")}
    return None
