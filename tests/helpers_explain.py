"""Test helpers for the explanation area: a small registered dataset + classifier, and a hand-made run."""
from __future__ import annotations

import numpy as np


def dataset_and_model(n: int = 20, size: int = 32, seed: int = 0, name: str = "g") -> tuple[int, int]:
    """A SynthCXR dataset of n images and an untrained (seeded) simple_cnn registered for it: (dataset_id, model_id)."""
    import torch

    from core.models import create_model
    from services.data.datasets import synth_dataset
    from services.models.registry import register_model, save_checkpoint_dir

    ds = synth_dataset(name, n=n, size=size, confounder=0.9, seed=seed, user_id=None)
    torch.manual_seed(seed)
    model = create_model("simple_cnn", num_classes=4, in_chans=1, width=8)
    cfg = {"arch": "simple_cnn", "num_classes": 4, "in_chans": 1, "arch_kwargs": {"width": 8},
           "classes": ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"], "image_size": size,
           "dataset_id": ds["dataset_id"]}
    ckpt = save_checkpoint_dir(model, cfg)
    mid = register_model(name=f"{name}-cnn", arch="simple_cnn", checkpoint=ckpt, dataset_id=ds["dataset_id"],
                         config=cfg)
    return ds["dataset_id"], mid


def fake_run(dataset_id: int, model_id: int, seed: int = 0) -> int:
    """A run over every image of the dataset with random maps and distinct, known metrics (AR = i / n in a
    shuffled order; image 0's metrics are NULL). Returns the run id."""
    from sqlalchemy import insert

    from db.models import Explanation, ExplanationRun
    from services.platform.database import session
    from services.data.datasets import load_arrays
    from services.explanations.explaining import METRICS, run_dir

    arr = load_arrays(dataset_id)
    n, size = len(arr), arr.size
    rng = np.random.default_rng(seed)
    ar = rng.permutation(n) / n
    with session() as s:
        run = ExplanationRun(model_id=model_id, method="gradcam", target="predicted", splits=[], tau=0.5,
                             maps_path="", summary={"n": n, "dataset_id": dataset_id})
        s.add(run)
        s.flush()
        d = run_dir(run.id)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "maps.npy", rng.random((n, size, size)).astype(np.float16))
        run.maps_path = str(d / "maps.npy")
        rows = []
        for i in range(n):
            pred = int(arr.labels[i]) if i % 3 else int((arr.labels[i] + 1) % 4)
            m = {k: float((ar[i] + j * 0.01) % 1.0) for j, k in enumerate(METRICS)}
            if i == 0:
                m = {k: None for k in METRICS}
            rows.append({"run_id": run.id, "image_id": int(arr.image_ids[i]), "index": i, "target": pred,
                         "pred": pred, "prob": 0.5 + 0.5 * float(ar[i]), **m})
        s.execute(insert(Explanation), rows)
        return run.id
