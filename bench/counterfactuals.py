"""Counterfactual figures on N val images of a dataset (the demo by default), for each row of ROWS:

flip rate, cross-model flip (the independent classifier B flips to the target too), mean target probability, L1
(mean |Δ| in [0, 1]), mean bits/dim and its change from the original (Δbpd; bits/dim favours smooth images),
realism against real held-out images of the target classes in B's feature space (FD, KID) and sharpness
(high-frequency energy relative to those real images), share per category, UNet passes per image (guided and
all: a diffusion sample is finished to t = 0), seconds per image, and the overhead ratio s / (steps × one step's
unit cost) with the unit cost (one UNet + classifier forward and backward for diffusion; one classifier forward +
backward for pixel-space methods) measured in the same run at the same batch size. Then the adversarial
statistic (diffusion-purification drop, core/counterfactual/purify.py): its AUROC real vs adversarial and
counterfactual vs adversarial. Then the shortcut probe for the baseline and its newest retrained child: artefact
injection (share of held-out predictions changed per corner) and counterfactual change mass (share of |Δ| in the
marker box / lungs over their area share).

Images run one at a time by default (--batch 1), so seconds per image are what one click in the studio costs.
With --tries K every image runs K times (seeds seed + i + n·k): the table gives the flip rate per try (every try
counted) beside best-of-K (an image counts once one of its tries flipped: what the service keeps with n_seeds = K),
UNet passes per try and the whole cost per image (passes summed over its K tries).

THE RULE for the presets' settings (what `--split val`, the default, is for): on val images only, never test, the
default preset is the setting with the fewest UNet passes per try whose flip rate per try is ≥ 0.95, counting
every try; a setting that needs more than 60 passes per try is out. Test is for reporting once (--split test).
Rows are (label, method, options, how many images); the GAN rows (known attributes, latent) come from services.counterfactuals.gan.

Settings chosen on val (2026-12-07; demo, 20 val images × 3 tries, target = second class, baseline #1, CPU;
`--rows "fast preset" --n 20 --tries 3 --no-probe`, tables in bench/results/counterfactuals_val_cpu.txt):
  fast preset, early stop 5 + 10 guided finishing passes (the former default): flip per try 1.00 (best-of-3 1.00),
  18.2 UNet passes per try (max 36), 54.6 per image over its 3 tries; FD 70.6; 0.98 of flips counterfactual.
  early stop 3 + 6 finishing passes: flip per try 1.00 (best-of-3 1.00), 12.2 passes per try (max 30), 36.6 per
  image over 3 tries; FD 61.8; 1.00 of flips counterfactual. By the rule it is the default now.
Earlier run (before the rule; 8 *test* images: not a basis for choosing): fast preset flip 1.00 in 17 UNet passes,
xaidiff (100 steps, 3 images) flip 0.67; purification drop AUROC real vs adversarial 0.97; artefact probe changed
0.06/0.28/0.01/0.00 (TL/TR/BL/BR) for the baseline and 0.03/0.08/0.01/0.00 after `exemplar exbl --auto`.

Usage: OMP_NUM_THREADS=1 python bench/counterfactuals.py [--dataset demo] [--model ID] [--n 20] [--tries 3] [--n-xaidiff 4]
       [--xaidiff-steps 500] [--target second|normal] [--device cpu]
Writes $EXEMPLAR_HOME/bench/counterfactuals.json.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Row:
    label: str
    method: str
    options: dict = field(default_factory=dict)
    n_key: str = "n"   # which image count applies ("n" or "n_xaidiff")
    unit: str = "unet"  # the step's unit cost: "unet" (UNet + classifier fwd/bwd) or "classifier"


ROWS: list[Row] = [
    Row("xaidiff preset", "diffusion", {"preset": "xaidiff"}, "n_xaidiff"),
    Row("fast preset", "diffusion", {"preset": "fast"}),
    Row("fast, unguided finish", "diffusion", {"preset": "fast", "finish": "ddim"}),
    Row("adversarial", "adversarial", {}, unit="classifier"),
]
# issue 8: GAN (GCI) rows, known-attribute and latent modes; their generator and attributes come from services.counterfactuals.gan.
from core.registries import COUNTERFACTUAL_METHODS  # noqa: E402
from services.counterfactuals.gan import BENCH_ROWS as _GAN_ROWS  # noqa: E402

ROWS += [Row(label, "gan", opts, unit="gan") for label, opts in _GAN_ROWS]
GAN: dict = {}  # set in main(): {"bundle", "attrs" per benchmarked image, "generator_id"} (services.counterfactuals.gan.bench_context)


def pick_targets(probs: np.ndarray, classes: list[str], rule: str) -> np.ndarray:
    pred = probs.argmax(1)
    if rule == "second":
        return np.argsort(-probs, 1)[:, 1]
    if rule == "normal":
        normal = classes.index("Normal")
        other = classes.index("COVID") if "COVID" in classes else (normal + 1) % len(classes)
        return np.where(pred == normal, other, normal)
    raise ValueError(f"unknown target rule {rule!r}")


def unit_cost(kind: str, unet, clf, x: torch.Tensor, reps: int = 5) -> float:
    """Seconds of one guided step's core work at this batch size (median of reps)."""
    ts = []
    for _ in range(reps + 1):
        xt = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        if kind == "unet":
            eps = unet(xt, torch.full((x.shape[0],), 500, dtype=torch.long)).sample
            img = ((xt - eps * 0.5) + 1) / 2
        elif kind == "gan":  # one G(I; A') forward + classifier forward + backward
            img = GAN["bundle"].G(xt, torch.as_tensor(GAN["attrs"][:x.shape[0]]))
        else:
            img = xt
        loss = F.log_softmax(clf(img), 1)[:, 0].sum()
        torch.autograd.grad(loss, xt)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts[1:]))


def run_row(row: Row, clf, gen, scorer, x_all: torch.Tensor, tgt_all: np.ndarray, orig_all: np.ndarray,
            batch: int, lung: np.ndarray, marker: np.ndarray, device: str, seed: int, overrides: dict) -> dict:
    from core.counterfactual import generate
    from core.counterfactual.taxonomy import categorize, shares
    from core.generative.ddpm import to_uint8
    from services.counterfactuals.runs import delta_shares

    unet = gen[0] if gen is not None else None
    n = len(x_all)
    imgs, probs, passes, guided, steps, secs = [], [], [], [], [], []
    for s in range(0, n, batch):
        xb = x_all[s:s + batch]
        tb = torch.as_tensor(tgt_all[s:s + batch])
        opts = {**row.options, **overrides.get(row.label, {})}
        if row.method == "diffusion":
            opts["seeds"] = [seed + s + i for i in range(len(xb))]
        if row.method == "gan":
            opts["attributes"] = GAN["attrs"][s:s + batch]
        t0 = time.perf_counter()
        out = generate(row.method, clf, xb, tb, generator=gen if row.method == "diffusion" else GAN.get("bundle"),
                       device=device, **opts)
        secs.append(time.perf_counter() - t0)
        imgs.append(to_uint8(out.images))
        probs.append(out.probs)
        passes.extend(out.unet_passes.tolist())
        guided.extend((out.guided_passes if out.guided_passes is not None else out.unet_passes).tolist())
        finite = np.isfinite(out.prob_curve)
        steps.extend(finite.sum(1).tolist())
    imgs = np.concatenate(imgs)
    probs = np.concatenate(probs)
    x_u8 = to_uint8(x_all)
    bpd = scorer(imgs) if scorer is not None else None
    bpd0 = scorer(x_u8) if scorer is not None else None
    preds = probs.argmax(1)
    cats = [categorize(int(p), int(o), int(t), None if bpd is None else float(b), scorer.eps if scorer else None)
            for p, o, t, b in zip(preds, orig_all, tgt_all, bpd if bpd is not None else [None] * n)]
    flips = preds == tgt_all
    l1 = np.abs(imgs.astype(float) - x_u8.astype(float)).reshape(n, -1).mean(1) / 255
    sh = [delta_shares(x_u8[i], imgs[i], lung[i], marker[i]) for i in range(n)]
    from services.counterfactuals.runs import marker_box

    boxes = [marker_box(marker[i]) for i in range(n)]
    box_area = float(np.mean([b.mean() for b in boxes if b is not None])) if any(b is not None for b in boxes) else None
    unit = unit_cost(row.unit, unet, clf, x_all[:batch])
    total_steps = float(np.sum(steps))
    flip_cats = [c for c, f in zip(cats, flips) if f]
    return {
        "label": row.label, "method": row.method, "n": n, "flip_rate": float(flips.mean()),
        "target_prob": float(probs[np.arange(n), tgt_all].mean()), "l1": float(l1.mean()),
        "bpd": None if bpd is None else float(np.mean(bpd)),
        "delta_bpd": None if bpd is None else float(np.mean(bpd - bpd0)),
        "categories": shares(cats), "flip_categories": shares(flip_cats) if flip_cats else {},
        "unet_passes_per_image": float(np.mean(passes)), "guided_passes_per_image": float(np.mean(guided)),
        "max_unet_passes": int(np.max(passes)), "steps_per_image": total_steps / n, "images": imgs,
        "bpd_values": None if bpd is None else np.asarray(bpd), "flips": flips,
        "seconds_per_image": float(np.sum(secs)) / n, "unit_seconds": unit, "unit": row.unit,
        "overhead_ratio": float(np.sum(secs)) / (total_steps / len(x_all[:batch]) * unit) if total_steps else None,
        "marker_share": float(np.nanmean([d["marker_share"] for d in sh])),
        "lung_share": float(np.nanmean([d["lung_share"] for d in sh])),
        "marker_box_area": box_area, "lung_area": float(np.mean([l.mean() for l in lung])),
    }


def tries_summary(res: dict, tries: int, n: int) -> dict:
    """Per try and per image figures of a row whose n images ran `tries` times each (tries-major order)."""
    flips = np.asarray(res["flips"]).reshape(tries, n)
    bpd = res["bpd_values"]
    return {"tries": tries, "images": res["images"][:n], "n": n,  # realism, purification: the first try
            "flips": flips[0], "bpd_values": None if bpd is None else bpd[:n],
            "flip_rate_per_try": float(flips.mean()), "flip_best_of_k": float(flips.any(0).mean()),
            "unet_passes_per_try": res["unet_passes_per_image"],
            "unet_passes_total_per_image": res["unet_passes_per_image"] * tries}


def realism_extras(res: dict, B, tgt: np.ndarray, real_pool: np.ndarray, device: str) -> dict:
    """Cross-model flip under B and FD / KID / sharpness against real held-out target-class images (B's features)."""
    from core.metrics.realism import realism

    imgs = res["images"]
    if B is None:
        return {"cross_flip": None, "fd": None, "kid": None, "sharpness": None}
    with torch.no_grad():
        pb = torch.softmax(B(torch.from_numpy(imgs).float().div(255)[:, None].to(device)), 1).cpu().numpy()
    r = realism(B, imgs, real_pool, device)
    return {"cross_flip": float((pb.argmax(1) == tgt).mean()), "fd": r["fd"], "kid": r["kid"],
            "sharpness": r["sharpness"]}


def real_pool_for(arr, tgt: np.ndarray, exclude: np.ndarray, split: str, k: int, seed: int) -> np.ndarray:
    """k real held-out images of each benchmarked image's target class (not the benchmarked images themselves)."""
    rng = np.random.default_rng(seed + 1)
    rest = np.setdiff1d(arr.split_index(split), exclude)
    rows = [rng.choice(rest[arr.labels[rest] == t], k, replace=False) for t in tgt if (arr.labels[rest] == t).sum() >= k]
    return arr.images[np.concatenate(rows)] if rows else arr.images[rest[:0]]


def adversarial_statistic(results: list[dict], x_u8: np.ndarray, gen, clf, device: str, drop_eps: float | None,
                          eps: float | None) -> dict:
    """AUROC of the purification drop (real vs adversarial, each diffusion row vs adversarial) and, at the calibrated
    ε_drop, the share of each row's flips classed adversarial by bits/dim or the drop (the product's taxonomy)."""
    from core.counterfactual.purify import auroc, purification_drop

    adv = next((r for r in results if r["method"] == "adversarial"), None)
    if adv is None or gen is None:
        return {}
    drop = lambda imgs: purification_drop(gen[0], gen[1], clf, torch.from_numpy(imgs).float().div(255)[:, None],
                                          device=device)  # noqa: E731
    d_adv, d_real = drop(adv["images"]), drop(x_u8)
    out = {"real_vs_adversarial": auroc(d_real, d_adv), "real_mean": float(d_real.mean()),
           "adversarial_mean": float(d_adv.mean()), "drop_eps": drop_eps}
    for r in results:
        d = d_adv if r is adv else drop(r["images"]) if COUNTERFACTUAL_METHODS.get(r["method"]).generator else None
        if d is None:
            continue
        if r is not adv:
            out[f"{r['label']}_vs_adversarial"] = auroc(d, d_adv)
        if drop_eps is not None and eps is not None and r["bpd_values"] is not None and r["flips"].any():
            f = r["flips"]
            out[f"{r['label']}_adversarial_share"] = float(np.mean((r["bpd_values"][f] > eps) | (d[f] > drop_eps)))
    return out


def probe_rows(models: list[dict], base_id: int, run_fast, device: str) -> list[dict]:
    """Artefact injection and change mass for the baseline and its newest retrained child (when there is one)."""
    from core.probe.change_mass import mean_ratio
    from services.counterfactuals.runs import marker_box
    from services.counterfactuals.probe import probe_artefact

    children = [m for m in models if m.get("parent_id") == base_id]
    out = []
    for label, mid in [("baseline", base_id)] + ([("retrained", children[-1]["id"])] if children else []):
        p = probe_artefact(mid, device=device)
        x_u8, imgs, lung, marker, flip = run_fast(mid)
        out.append({"model": label, "model_id": mid, "changed": [q["changed"] for q in p.positions],
                    "toward": [q["toward"] for q in p.positions], "n": p.n, "flip_rate": flip,
                    "marker_ratio": mean_ratio([(x_u8[i], imgs[i], marker_box(marker[i])) for i in range(len(imgs))]),
                    "lung_ratio": mean_ratio([(x_u8[i], imgs[i], lung[i]) for i in range(len(imgs))])})
    return out


def fmt(v, nd=3):
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", type=int, default=None, help="classifier id (default: the dataset's first)")
    ap.add_argument("--generator", type=int, default=None, help="DDPM id (default: the dataset's newest)")
    ap.add_argument("--gan", type=int, default=None, help="GAN id (default: the dataset's newest)")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--n-xaidiff", type=int, default=4)
    ap.add_argument("--xaidiff-steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--split", default="val", help="val chooses settings (the default); test reports once")
    ap.add_argument("--tries", type=int, default=1, help="runs per image (seeds); flip per try and best-of-K")
    ap.add_argument("--target", default="second", choices=["second", "normal"])
    ap.add_argument("--rows", default=None, help="comma-separated row labels to run (default all)")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--overrides", default=None,
                    help='JSON {row label: {option: value}}, e.g. \'{"fast preset": {"t_start": 250}}\'')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()

    from services.models.catalog import list_models
    from services.data.datasets import get_dataset, load_arrays
    from services.counterfactuals.generators import bpd_settings, ensure_bpd_threshold, get_generator, load_ddpm_generator
    from services.models.registry import load_classifier
    from services.platform.settings import get_settings, resolve_device
    from core.generative.bpd import bits_per_dim

    device = resolve_device(a.device)
    ds = get_dataset(a.dataset)
    models = list_models("classifier", ds["id"])
    if not models:
        raise SystemExit(f"no classifier for dataset {ds['name']}")
    base_id = a.model or models[0]["id"]
    clf, _ = load_classifier(base_id, device)
    grow = get_generator(ds["id"], "ddpm", a.generator)
    gen = load_ddpm_generator(grow, device) if grow else None
    scorer = None
    if gen is not None:
        info = ensure_bpd_threshold(grow, ds["id"], device)
        st = bpd_settings({"metrics": {"bpd": info}})

        def scorer(imgs):
            return bits_per_dim(gen[0], gen[1], imgs, terms=st["terms"], seed=st["seed"], device=device).bpd

        scorer.eps = float(info["eps"])
        scorer.estimator = info["estimator"]
    arr = load_arrays(ds["id"])
    idx = arr.split_index(a.split)
    rng = np.random.default_rng(a.seed)
    idx = np.sort(rng.choice(idx, min(a.n, len(idx)), replace=False))
    n_img = len(idx)
    x = torch.from_numpy(arr.images[idx]).float().div(255)[:, None]
    with torch.no_grad():
        p0 = torch.softmax(clf(x.to(device)), 1).cpu().numpy()
    tgt = pick_targets(p0, list(arr.classes), a.target)
    orig = p0.argmax(1)
    overrides = {"xaidiff preset": {"steps": a.xaidiff_steps}}
    for label, opts in (json.loads(a.overrides) if a.overrides else {}).items():
        overrides[label] = {**overrides.get(label, {}), **opts}
    results = []
    wanted = set(a.rows.split(",")) if a.rows else None
    for row in ROWS:
        if wanted and row.label not in wanted:
            continue
        if row.method == "diffusion" and gen is None:
            print(f"skipping {row.label}: no DDPM for {ds['name']}")
            continue
        if row.method == "gan" and not GAN:
            from services.counterfactuals.gan import bench_context

            GAN.update(bench_context(ds["id"], idx, device, a.gan) or {"missing": True})
        if row.method == "gan" and "bundle" not in GAN:
            print(f"skipping {row.label}: no GAN for {ds['name']}")
            continue
        k = a.n_xaidiff if row.n_key == "n_xaidiff" else a.n
        t0 = time.perf_counter()
        reps = a.tries if row.method == "diffusion" else 1
        tile = lambda v: np.concatenate([v[:k]] * reps)  # noqa: E731
        res = run_row(row, clf, gen, scorer, torch.cat([x[:k]] * reps), tile(tgt), tile(orig), a.batch,
                      tile(arr.lung[idx]), tile(arr.marker[idx]), device, a.seed, overrides)
        res.update(tries_summary(res, reps, k))
        res["wall_seconds"] = time.perf_counter() - t0
        results.append(res)
        print(f"  {row.label}: done in {res['wall_seconds']:.0f}s", flush=True)

    from services.models.independent import load_independent

    B, brow = load_independent(ds["id"], device, exclude=base_id)
    real_pool = real_pool_for(arr, tgt[:a.n], idx, a.split, 3, a.seed)
    for r in results:
        k = r["n"]
        r.update(realism_extras(r, B, tgt[:k], real_pool, device))
    drop_eps = None
    if gen is not None:
        from services.counterfactuals.generators import ensure_purify_threshold

        drop_eps = ensure_purify_threshold(grow, ds["id"], base_id, clf, device)["eps"]
    adv_stat = adversarial_statistic(results, arr.images[idx], gen, clf, device, drop_eps,
                                     scorer.eps if scorer else None)

    probe = []
    if not a.no_probe and gen is not None:
        def run_fast(mid):
            c, _ = load_classifier(mid, device)
            with torch.no_grad():
                pp = torch.softmax(c(x.to(device)), 1).cpu().numpy()
            r = run_row(Row("probe", "diffusion", {"preset": "fast"}), c, gen, scorer, x, pick_targets(
                pp, list(arr.classes), a.target), pp.argmax(1), a.batch, arr.lung[idx], arr.marker[idx], device,
                a.seed, {})
            return arr.images[idx], r["images"], arr.lung[idx], arr.marker[idx], r["flip_rate"]

        probe = probe_rows(models, base_id, run_fast, device)

    head = ["row", "n", "flip", "B flip", "p(tgt)", "L1", "bpd", "Δbpd", "FD", "KID", "sharp", "cf", "adv", "aff",
            "none", "guided/img", "passes/img", "max", "s/img", "overhead"]
    print(f"\nCounterfactuals on {ds['name']} ({a.split}, target rule {a.target}), model #{base_id}, device {device}"
          + (f", DDPM #{grow['id']}, ε {scorer.eps:.3f} bits/dim ({scorer.estimator})" if scorer else "")
          + (f", independent classifier B #{brow['id']} {brow['arch']}" if brow else ", no independent classifier"))
    print(f"FD / KID against {len(real_pool)} real held-out images of the target classes; sharpness = high-frequency "
          "energy / that of those images; bits/dim favours smooth images")
    print(" | ".join(head))
    for r in results:
        c = r["categories"]
        print(" | ".join([r["label"], str(r["n"]), fmt(r["flip_rate"], 2), fmt(r["cross_flip"], 2),
                          fmt(r["target_prob"]), fmt(r["l1"], 4), fmt(r["bpd"]), fmt(r["delta_bpd"]), fmt(r["fd"]),
                          fmt(r["kid"], 4), fmt(r["sharpness"], 2), fmt(c.get("counterfactual"), 2),
                          fmt(c.get("adversarial"), 2), fmt(c.get("affirmative"), 2), fmt(c.get("none"), 2),
                          fmt(r["guided_passes_per_image"], 1), fmt(r["unet_passes_per_image"], 1),
                          str(r["max_unet_passes"]), fmt(r["seconds_per_image"], 2), fmt(r["overhead_ratio"], 2)]))
    print("\nEvery try counted (UNet passes summed over an image's tries; best-of-K = one of its tries flipped):")
    print("row | tries | flip per try | best-of-K | passes per try | passes per image (all tries)")
    for r in results:
        print(" | ".join([r["label"], str(r["tries"]), fmt(r["flip_rate_per_try"], 2), fmt(r["flip_best_of_k"], 2),
                          fmt(r["unet_passes_per_try"], 1), fmt(r["unet_passes_total_per_image"], 1)]))
    for r in results:
        if r["flip_categories"]:
            fc = r["flip_categories"]
            print(f"  {r['label']}: of its flips {fmt(fc['counterfactual'], 2)} counterfactual, "
                  f"{fmt(fc['adversarial'], 2)} adversarial")
    if adv_stat:
        print("\nAdversarial statistic (purification drop: p(own class) lost after noising to t = 100 and a 5-step "
              "DDIM back; ε_drop = its 95th percentile on val): " + ", ".join(
                  f"{k.replace('_', ' ')} {fmt(v)}" for k, v in adv_stat.items() if v is not None))
    if probe:
        print("\nShortcut probe. Artefact injection: share of held-out predictions changed with the marker glyph "
              "pasted at TL / TR / BL / BR. Change mass (fast preset): share of |Δ| in the marker box / lungs over "
              "the region's area share (1 = uniform)")
        for p in probe:
            print(f"  {p['model']} #{p['model_id']}: artefact changed " + " / ".join(fmt(v, 2) for v in p["changed"])
                  + f" (toward {', '.join(p['toward'])}; n {p['n']}) · flip {fmt(p['flip_rate'], 2)} · change mass "
                  f"marker {fmt(p['marker_ratio'], 2)}, lungs {fmt(p['lung_ratio'], 2)}")
    for r in results:
        for k in ("images", "bpd_values", "flips"):
            r.pop(k, None)
    out = get_settings().path("bench") / "counterfactuals.json"
    out.write_text(json.dumps({"dataset": ds["name"], "model_id": base_id, "device": str(device),
                               "generator_id": grow["id"] if grow else None,
                               "eps": scorer.eps if scorer else None, "args": vars(a), "rows": results,
                               "adversarial_statistic": adv_stat, "probe": probe,
                               "independent_id": brow["id"] if brow else None}, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
