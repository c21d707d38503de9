"""The corrected model out: the `model.export` job (docs/architecture.md, "Your own classifier").

Writes the weights (core.models.export: safetensors with the source's key names, a torch.export .pt2 or ONNX), a
model card beside them (model_card.json and README.md: architecture, classes, preprocessing, lineage, retraining
method, exemplars, seeds, held-out figures and verdict, the dataset's content hash), then loads back what it wrote
and reports the largest logit difference on 16 held-out images.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from db.models import Image
from services.data.datasets import load_arrays
from services.models.config_schema import retrain_link, xbl_config
from services.models.model_import import acting
from services.models.registry import get_model, lineage, load_classifier
from services.models.retrain_models import get_retrain
from services.platform.database import read_session
from services.platform.settings import get_settings
from services.team import audit
from services.team.access import require

Progress = Callable[..., None]
CHECK_IMAGES = 16
HELD_OUT = ("test", "test_shifted", "val")


@dataclass
class ExportResult:
    model_id: int
    format: str
    path: str
    card: str
    readme: str
    max_abs_logit_diff: float
    checked_images: int
    checked_split: str

    def to_dict(self) -> dict:
        return asdict(self)


def dataset_hash(dataset_id: int) -> str:
    """sha256 over the dataset's (image sha256, label, split) rows in id order: what the model was judged on."""
    from sqlalchemy import select

    h = hashlib.sha256()
    with read_session() as s:
        for sha, label, split in s.execute(select(Image.sha256, Image.label, Image.split)
                                           .where(Image.dataset_id == int(dataset_id)).order_by(Image.id)):
            h.update(f"{sha}\t{label}\t{split}\n".encode())
    return h.hexdigest()


def model_card(row: dict) -> dict:
    """The card of a registered classifier: everything a reader of the exported file needs to use and trust it."""
    cfg = row.get("config") or {}
    ak = cfg.get("arch_kwargs") or {}
    classes = list(cfg.get("classes") or [])
    order = ak.get("class_order")
    if order:  # the network's output j is dataset class i where order[i] == j
        out = [None] * len(classes)
        for i, j in enumerate(order):
            out[j] = classes[i]
        classes = out
    xbl = xbl_config(cfg)
    chain = [get_model(i) for i in lineage(int(row["id"]))]
    ev = cfg.get("evidence") or {}
    return {
        "model_id": row["id"], "name": row["name"], "architecture": row["arch"],
        "classes": classes,
        "preprocessing": {"input": "images in [0, 1], (N, C, H, W)", "input_size": cfg.get("input_size"),
                          "channels": ak.get("channels", cfg.get("in_chans", 1)),
                          "grey_images": "repeat the grey channel" if ak.get("channels", 1) == 3 else "as they are",
                          "normalize": {"mean": ak.get("mean"), "std": ak.get("std")} if "mean" in ak
                          else "inside the network (Exemplar's own)"},
        "target_layer": (ak.get("target") or {}).get("name"),
        "lineage": [{"id": m["id"], "name": m["name"], "method": ((m.get("config") or {}).get("xbl") or {})
                     .get("method", "imported" if (m.get("config") or {}).get("imported") else "trained")}
                    for m in chain if m],
        "retraining": {"method": xbl.method, "settings": xbl.settings, "seeds": xbl.seeds,
                       "seed": xbl.finetune.get("seed"), "exemplars": xbl.pair,
                       "pair_source": xbl.pair_source} if xbl else None,
        "held_out": {s: {k: m.get(k) for k in ("n", "accuracy", "auroc", "ece")}
                     for s, m in (row.get("metrics") or {}).items() if isinstance(m, dict) and "accuracy" in m},
        "verdict": ev.get("verdict"),
        "retrain": _retrain_part(cfg),
        "dataset": {"id": row.get("dataset_id"), "name": cfg.get("dataset"),
                    "content_sha256": dataset_hash(row["dataset_id"]) if row.get("dataset_id") else None},
        "imported_from": cfg.get("imported"),
    }


def _retrain_part(cfg: dict) -> dict | None:
    """The model's place in its retrain (id, seed, role: child | control | random_control) and the group's verdict
    over every seed, when it came from one."""
    link = retrain_link(cfg)
    if link is None:
        return None
    r = get_retrain(link.retrain_id)
    return {"retrain_id": link.retrain_id, "seed": link.seed, "role": link.role,
            "lineage": link.lineage, "seeds": r["seeds"] if r else None,
            "group_verdict": (r["evidence"] or {}).get("verdict") if r else None}


def card_readme(card: dict, weights: str) -> str:
    """The card as a short README that a newcomer can follow."""
    pre = card["preprocessing"]
    lines = [f"# {card['name']} (Exemplar model #{card['model_id']})", "",
             f"- Architecture: `{card['architecture']}`; file: `{weights}`",
             f"- Classes (output order): {', '.join(card['classes'])}",
             f"- Input: {pre['input']}, {pre['channels']} channel(s) at {pre['input_size']} px; grey images: "
             f"{pre['grey_images']}; normalisation: {pre['normalize']}",
             f"- GradCAM target layer: {card['target_layer'] or 'the last feature block'}",
             "- Lineage: " + " → ".join(f"#{m['id']} {m['name']} ({m['method']})" for m in card["lineage"])]
    if card["retraining"]:
        r = card["retraining"]
        ex = r.get("exemplars") or {}
        lines.append(f"- Retraining: {r['method']} with settings {r['settings']}, {r['seeds']} seed(s); exemplars: "
                     f"good {(ex.get('good') or {}).get('path')}, bad {(ex.get('bad') or {}).get('path')}")
    for split, m in card["held_out"].items():
        lines.append(f"- {split}: accuracy {m['accuracy']}, macro AUROC {m.get('auroc')}, ECE {m.get('ece')} "
                     f"(n {m.get('n')})")
    if card["verdict"]:
        lines.append(f"- Verdict (this model's seed): {card['verdict']}")
    rt = card.get("retrain")
    if rt:
        lines.append(f"- Retrain #{rt['retrain_id']}, seed {rt['seed']}, role {rt['role']}"
                     + (f" ({rt['lineage']})" if rt.get("lineage") else "")
                     + (f"; over its {rt['seeds']} seeds: {rt['group_verdict']}" if rt.get("group_verdict") else ""))
    lines.append(f"- Dataset {card['dataset']['name']}, content sha256 {card['dataset']['content_sha256']}")
    lines += ["", "Load the weights: `net.load_state_dict(safetensors.torch.load_file(PATH), strict=True)` into a",
              "fresh network of the same architecture; the .pt2 program: `torch.export.load(PATH).module()(images)`."]
    return "\n".join(lines) + "\n"


def _check_images(arrays) -> tuple[str, object]:
    """Up to 16 held-out images: test first, then test_shifted, then val; (the splits used, their indices)."""
    import numpy as np

    picked, used = [], []
    for split in HELD_OUT:
        idx = arrays.split_index(split)[:CHECK_IMAGES - sum(len(p) for p in picked)]
        if len(idx):
            picked.append(idx)
            used.append(split)
        if sum(len(p) for p in picked) >= CHECK_IMAGES:
            break
    if not picked:
        raise ValueError("the model's dataset has no held-out images to check the export on")
    return "+".join(used), np.concatenate(picked)


def default_folder(model_id: int, fmt: str) -> Path:
    """A new folder under $EXEMPLAR_HOME/exports (what the web form writes into: never a path a user typed)."""
    import uuid

    return get_settings().path("exports") / f"model-{int(model_id)}-{fmt}-{uuid.uuid4().hex[:8]}"


def export_model(model_id: int, fmt: str, out: str | Path | None, *, user_id: int,
                 progress: Progress | None = None) -> ExportResult:
    """Write model #model_id as `fmt` into folder `out` (default: a new folder under $EXEMPLAR_HOME/exports) with
    its model card; reload it and compare logits. Existing files are never overwritten."""
    import torch

    from core.models import create_model
    from core.models.export import FORMATS, WRITERS, portable_input, reference_logits, reload_logits
    actor = require(acting(user_id), "model.export")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    say = progress or (lambda *a, **k: None)
    model, row = load_classifier(int(model_id), "cpu")
    cfg = row["config"] or {}
    out = Path(out).expanduser() if out else default_folder(model_id, fmt)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", row["name"]).strip("-") or f"model-{model_id}"
    path = out / f"{stem}.{fmt}"
    taken = [p.name for p in (path, out / "model_card.json", out / "README.md") if p.exists()]
    if taken:
        raise ValueError(f"{out} already holds {', '.join(taken)}; export into an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    size = int(cfg.get("image_size") or cfg.get("input_size") or 64)
    say(0.1, f"writing {path.name}")
    WRITERS[fmt](model, path, size)
    arrays = load_arrays(row["dataset_id"])
    split, idx = _check_images(arrays)
    x = torch.from_numpy(arrays.images[idx]).float().div(255.0)[:, None]
    xp = portable_input(model, x, size)
    fresh = create_model(row["arch"], num_classes=cfg.get("num_classes", 4), in_chans=cfg.get("in_chans", 1),
                         input_size=cfg.get("input_size"), **cfg.get("arch_kwargs", {})) if fmt == "safetensors" \
        else None
    say(0.6, f"loading {path.name} back and comparing logits on {len(idx)} {split} images")
    diff = float((reload_logits(fmt, path, fresh, xp) - reference_logits(model, xp)).abs().max())
    card = {**model_card(row), "export": {"format": fmt, "file": path.name, "max_abs_logit_diff": diff,
                                          "checked_images": int(len(idx)), "checked_split": split}}
    card_path, readme = out / "model_card.json", out / "README.md"
    card_path.write_text(json.dumps(card, indent=2, default=str))
    readme.write_text(card_readme(card, path.name))

    audit.record(actor, "model.export", f"model:{int(model_id)}",
                 after={"format": fmt, "file": path.name, "max_abs_logit_diff": diff})
    say(1.0, f"exported model #{model_id} to {path} (max |Δlogit| {diff:.2e})", force=True)
    return ExportResult(int(model_id), fmt, str(path), str(card_path), str(readme), diff, int(len(idx)), split)


def export_job(ctx) -> dict:
    """`model.export` job. params: model_id, format, out (absent: a new folder under $EXEMPLAR_HOME/exports)."""
    p = dict(ctx.params)
    return export_model(int(p["model_id"]), p["format"], p.get("out"), user_id=ctx.user_id,
                        progress=ctx.progress).to_dict()
