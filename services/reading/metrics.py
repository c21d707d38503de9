"""Per-item faithfulness (POS, NEG, DEL, INS) of a map study's stored maps, so readers can be set against them:
a job (`study.metrics`) because it runs the classifier. Results live in the items' meta, never shown to readers."""
from __future__ import annotations

import numpy as np
from sqlalchemy import select

from core.registries import METRICS
from db.models import Explanation, ExplanationRun, Image, Study, StudyItem
from services.platform.database import read_session, session
from services.data.datasets import load_arrays
from services.explanations.explaining import load_maps
from services.models.registry import load_classifier

FAITHFULNESS = tuple(METRICS.names(kind="faithfulness"))


def study_faithfulness(study_id: int, device: str | None = None, progress=None) -> dict:
    """Compute POS/NEG/DEL/INS for every map item with the run's model and the item's explained class."""
    import torch

    from core.metrics.faithfulness import faithfulness
    with read_session() as s:
        st_ = s.get(Study, int(study_id))
        if st_ is None or st_.kind != "map" or st_.run_id is None:
            raise ValueError(f"study {study_id} is not a study over the maps of a run")
        run = s.get(ExplanationRun, st_.run_id)
        rows = s.execute(select(StudyItem.id, Explanation.index, Explanation.target, Image.index, Image.label,
                                Image.dataset_id)
                         .join(Explanation, Explanation.id == StudyItem.explanation_id)
                         .join(Image, Image.id == StudyItem.image_id)
                         .where(StudyItem.study_id == st_.id).order_by(StudyItem.position)).all()
        model_id, run_id = run.model_id, run.id
    if not rows:
        return {"study_id": int(study_id), "n": 0}
    model, _ = load_classifier(model_id, device)
    dev = next(model.parameters()).device
    arrays = load_arrays(rows[0][5])
    maps = load_maps(run_id)
    x = torch.from_numpy(np.stack([arrays.images[r[3]] for r in rows])).to(dev).float().div_(255.0)[:, None]
    m = torch.from_numpy(np.stack([np.asarray(maps[r[1]], np.float32) for r in rows])).to(dev)
    tgt = torch.tensor([r[2] for r in rows], device=dev)
    lab = torch.tensor([r[4] for r in rows], device=dev)
    if progress:
        progress(0.2, f"faithfulness of {len(rows)} maps")
    with torch.no_grad():
        f = faithfulness(model, x, m, tgt, labels=lab)
    vals = {k: f[k].float().cpu().numpy() for k in FAITHFULNESS}
    with session() as s:
        for i, r in enumerate(rows):
            it = s.get(StudyItem, r[0])
            it.meta = {**(it.meta or {}), "faithfulness": {k: float(vals[k][i]) for k in FAITHFULNESS}}
    return {"study_id": int(study_id), "n": len(rows), **{k: float(np.mean(v)) for k, v in vals.items()}}


def study_metrics_job(ctx) -> dict:
    return study_faithfulness(int(ctx.params["study_id"]), ctx.params.get("device"),
                              progress=lambda f, msg: ctx.progress(f, msg))
