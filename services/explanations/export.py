"""Export of an explanation run: one .npz with image ids, dataset paths, labels, predictions, probabilities,
maps (at their stored map resolution, with `image_size` to upsample them to) and every metric as its own array; optionally the metrics table as CSV."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from core.files import atomic_write
from services.explanations.explaining import METRICS, load_maps, load_run, run_rows
from services.team import audit
from services.team.access import require
from services.explanations.explaining import dataset_classes


def export_explanations(run_id: int, out: str | Path, csv_path: str | Path | None = None,
                        *, user_id: int | None) -> dict:
    """Write the run to OUT (.npz; keys image_ids, paths, labels, splits, targets, preds, probs, maps, classes,
    run_id, tau, image_size and one float32 array per metric: ar, ap, f1, soft_ar, relevance_mass, rra, pointing, wr —
    NaN where undefined). Returns {run_id, out, csv, n, keys}."""
    actor = require(user_id, "export")  # team
    run = load_run(run_id)
    rows = run_rows(run_id)
    maps = load_maps(run_id, mmap=True, raw=True)
    order = np.array([r["index"] for r in rows], np.int64)
    arrays = {
        "image_ids": np.array([r["image_id"] for r in rows], np.int64),
        "paths": np.array([r["path"] for r in rows], dtype=str),
        "labels": np.array([r["label"] for r in rows], np.int64),
        "splits": np.array([r["split"] for r in rows], dtype=str),
        "targets": np.array([r["target"] for r in rows], np.int64),
        "preds": np.array([r["pred"] for r in rows], np.int64),
        "probs": np.array([r["prob"] for r in rows], np.float32),
        "maps": np.asarray(maps[order]),
        "classes": np.array(dataset_classes(run["dataset_id"]) if run.get("dataset_id") else [], dtype=str),
        "run_id": np.array(run["id"], np.int64),
        "tau": np.array(run["tau"], np.float32),
        "image_size": np.array((run.get("summary") or {}).get("image_size") or maps.shape[-1], np.int64),
    }
    for k in METRICS:
        arrays[k] = np.array([np.nan if r[k] is None else r[k] for r in rows], np.float32)
    out = Path(out).expanduser()
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")

    def _write_npz(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(out, _write_npz)
    res = {"run_id": run["id"], "out": str(out.resolve()), "csv": None, "n": len(rows), "keys": sorted(arrays)}
    if csv_path:
        cp = Path(csv_path).expanduser()
        cols = ["image_id", "path", "label", "split", "target", "pred", "prob", *METRICS]

        def _write_csv(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(cols)
                for r in rows:
                    w.writerow(["" if r[c] is None else r[c] for c in cols])

        atomic_write(cp, _write_csv)
        res["csv"] = str(cp.resolve())
    audit.record(actor, "export", f"run:{run_id}", after={"out": res["out"], "csv": res["csv"], "n": res["n"]})
    return res
