"""Your own classifier in: the `model.import` job (docs/architecture.md, "Your own classifier").

A torchvision / timm / user-factory network is built with the dataset's class count, its weights file is read
weights-only (or as safetensors) and must match key for key and shape for shape, its GradCAM layer is chosen by
core.models.target's rule (or the user's --target-layer), and it is evaluated on val, test and test_shifted so a
preprocessing mismatch shows at once. Nothing is registered unless every step passed.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from services.data.datasets import get_dataset, load_arrays
from services.models.registry import load_classifier, prune_partial, register_model, save_checkpoint_dir
from services.platform.settings import get_settings, resolve_device
from services.team import audit
from services.team.access import require

Progress = Callable[..., None]
EVAL_SPLITS = ("val", "test", "test_shifted")
CHANCE_MARGIN = 0.05


@dataclass
class ImportResult:
    """What an import registered, as the CLI prints it (--json) and the Models page shows it."""
    model_id: int
    name: str
    arch: str
    target_layer: str
    input_size: int
    channels: int
    normalize: dict
    classes: list[str]
    missing_keys: list[str]
    unexpected_keys: list[str]
    metrics: dict
    warning: str | None = None
    layers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def acting(user_id: int | None) -> int:
    """The acting user's id; None is refused (identity fails closed: no process identity stands in)."""
    if user_id is None:
        raise ValueError("importing or exporting a classifier needs an acting user (sign in; on the CLI "
                         "EXEMPLAR_TOKEN, or EXEMPLAR_USER on a local SQLite database)")
    return int(user_id)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def class_order(given: str | list[str] | None, dataset_classes: list[str]) -> list[int] | None:
    """--classes A,B,… (the network's output order) → for each dataset class, its output index; None = same order."""
    if not given:
        return None
    names = [c.strip() for c in (given.split(",") if isinstance(given, str) else given) if c.strip()]
    if sorted(names) != sorted(dataset_classes) or len(set(names)) != len(names):
        raise ValueError(f"--classes must name each of the dataset's classes once ({', '.join(dataset_classes)}), "
                         f"in the order of the network's outputs; got {', '.join(names)}")
    order = [names.index(c) for c in dataset_classes]
    return None if order == list(range(len(order))) else order


def check_keys(net: Any, state: dict, arch: str, dataset: dict, classes: list[str]) -> tuple[list[str], list[str]]:
    """Refuse (one line) a weights file whose keys or shapes do not fit the network built for the dataset."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        hint = " (the file's keys start with 'module.': save model.module.state_dict())" \
            if all(k.startswith("module.") for k in state) else ""
        raise ValueError(f"weights do not fit {arch}: {len(missing)} missing keys ({', '.join(missing[:3])}"
                         f"{'…' if len(missing) > 3 else ''}), {len(unexpected)} unexpected "
                         f"({', '.join(unexpected[:3])}{'…' if len(unexpected) > 3 else ''}){hint}; "
                         f"check --arch and that the file is this network's state dict")
    k = len(classes)
    for key, t in own.items():
        got = tuple(state[key].shape)
        if got != tuple(t.shape):
            if t.dim() >= 1 and t.shape[0] == k and got[:1] != (k,):
                raise ValueError(f"the checkpoint's head {key} has {got[0]} outputs but dataset {dataset['name']} "
                                 f"has {k} classes ({', '.join(classes)}); import it with a dataset of "
                                 f"{got[0]} classes or retrain its head outside first")
            raise ValueError(f"weights do not fit {arch}: {key} is {list(got)} in the file and {list(t.shape)} in "
                             f"the network; check --arch, --channels and --input-size")
    return missing, unexpected


def chance_warning(metrics: dict, k: int) -> str | None:
    val = (metrics.get("val") or {}).get("accuracy")
    if val is None or val != val or abs(val - 1.0 / k) > CHANCE_MARGIN:
        return None
    return (f"val accuracy {val:.3f} is within {CHANCE_MARGIN} of chance ({1.0 / k:.3f}): the preprocessing may "
            f"not match what the model was trained with (check --normalize, --channels, --input-size, --classes)")


def _wrap(arch, weights, ds, arrays, classes, input_size, channels, normalize, build_kwargs):
    """Build the network, check and load the weights, wrap it: (wrapper, missing, unexpected)."""
    from core.models.checkpoint import load_state_dict_file
    from core.models.imported import ImportedClassifier, build_network, parse_arch, parse_normalize

    parse_arch(arch)
    mean, std = parse_normalize(normalize, channels)
    state = load_state_dict_file(weights)
    built = build_network(arch, len(arrays.classes), channels, input_size, build_kwargs)
    missing, unexpected = check_keys(built.net, state, arch, ds, list(arrays.classes))
    built.net.load_state_dict(state, strict=True)
    order = class_order(classes, list(arrays.classes))
    wrapper = ImportedClassifier(built.net, arch, channels, input_size, mean, std, None, built.kwargs, order)
    check_logits(wrapper, arch, len(arrays.classes), arrays.size)
    return wrapper, missing, unexpected


def check_logits(wrapper, arch: str, k: int, size: int) -> None:
    """Refuse (one line) a network whose forward does not give one logit per dataset class."""
    import torch

    wrapper.eval()
    try:
        with torch.no_grad():
            out = wrapper(torch.rand(2, 1, size, size))
    except Exception as exc:  # noqa: BLE001  (any failure of the user's forward is one line)
        raise ValueError(f"{arch} failed on a batch of 2 images at {size} px: {type(exc).__name__}: {exc}; "
                         f"check --input-size, --channels and --build-kwargs") from None
    if tuple(out.shape) != (2, k):
        raise ValueError(f"{arch} returns {list(out.shape)} for 2 images, not [2, {k}] logits (one per class); "
                         f"a forward returning several tensors must give the logits first, in a dict as 'logits', "
                         f"or as .logits")


def choose_layer(wrapper, image_size: int, target_layer: str | None) -> tuple[Any, list]:
    """(chosen LayerInfo, every candidate) for an imported network: the rule, or the user's named layer."""
    from core.models.target import TargetRefused, TargetSpec, candidate_layers, choose_target, pick_layer

    hint = getattr(wrapper.net, "num_prefix_tokens", None)
    layers = candidate_layers(wrapper.net, wrapper, image_size, 1, hint if isinstance(hint, int) else None)
    if target_layer:
        chosen = pick_layer(layers, target_layer)
        if not chosen.carries_gradient:
            raise TargetRefused(f"--target-layer {target_layer!r}: its output does not reach the logits (for a "
                                f"class-token ViT use the last block's first norm, e.g. blocks.N.norm1)")
    else:
        try:
            chosen = choose_target(layers)
        except TargetRefused as exc:
            raise TargetRefused(f"{wrapper.arch}: {exc}") from None
    wrapper.set_target(TargetSpec(chosen.name, chosen.layout, chosen.prefix))
    return chosen, layers


def import_model(arch: str, weights: str | Path, dataset: int | str, *, user_id: int,
                 classes: str | list[str] | None = None, input_size: int | None = None, channels: int = 3,
                 normalize: str | None = "imagenet", target_layer: str | None = None, name: str | None = None,
                 build_kwargs: dict | None = None, device: str | None = None, job_id: int | None = None,
                 progress: Progress | None = None) -> ImportResult:
    """Import a classifier and register it; refusals are ValueErrors of one line and leave nothing behind."""
    from core.train.classifier import evaluate
    require(acting(user_id), "model.import")
    if arch.startswith("python:"):  # running a factory is running code on the server: admins only
        require(user_id, "model.import.code")
    say = progress or (lambda *a, **k: None)
    weights = Path(weights).expanduser()
    if channels not in (1, 3):
        raise ValueError(f"--channels must be 1 or 3, got {channels}")
    ds = get_dataset(dataset)
    arrays = load_arrays(ds["id"])
    size = int(input_size or arrays.size)
    if not 16 <= size <= 1024:
        raise ValueError(f"--input-size must be between 16 and 1024 px, got {size}")
    say(0.05, f"building {arch} for {len(arrays.classes)} classes at {size} px")
    if build_kwargs is not None and not isinstance(build_kwargs, dict):
        raise ValueError("--build-kwargs must be a JSON object, e.g. '{\"patch_size\": 8}'")
    wrapper, missing, unexpected = _wrap(arch, weights, ds, arrays, classes, size, channels, normalize,
                                         build_kwargs)
    chosen, layers = choose_layer(wrapper, arrays.size, target_layer)
    dev = resolve_device(device)
    say(0.3, f"target layer {chosen.name}; evaluating val, test and test_shifted ({dev})", force=True)
    metrics = evaluate(wrapper.to(dev), arrays, EVAL_SPLITS, batch_size=64, device=dev)
    warning = chance_warning(metrics, len(arrays.classes))
    cfg = wrapper.config()
    config = {"arch": arch, "num_classes": len(arrays.classes), "in_chans": 1, "arch_kwargs": cfg,
              "classes": list(arrays.classes), "image_size": arrays.size, "input_size": size,
              "dataset_id": ds["id"], "dataset": ds["name"],
              "imported": {"weights_file": weights.name, "weights_sha256": _sha256(weights),
                           "target_rule": "user" if target_layer else "auto", "warning": warning}}
    prune_partial()
    ckpt = save_checkpoint_dir(wrapper.cpu(), config)
    model_name = name or f"{ds['name']}-{arch.split(':')[-1].split('.')[-1]}"
    try:
        model_id = register_model(name=model_name, arch=arch, checkpoint=ckpt, dataset_id=ds["id"], config=config,
                                  metrics=metrics, job_id=job_id, created_by=user_id)
    except BaseException:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        raise
    say(1.0, f"model #{model_id} imported" + (f"; {warning}" if warning else ""), force=True)
    return ImportResult(model_id, model_name, arch, chosen.name, size, channels,
                        {"mean": cfg["mean"], "std": cfg["std"]}, list(arrays.classes), missing, unexpected,
                        {s: {"accuracy": m["accuracy"], "auroc": m.get("auroc"), "ece": m.get("ece"), "n": m["n"]}
                         for s, m in metrics.items()}, warning, [l.to_dict() for l in layers])


def list_layers(model_id: int) -> dict:
    """{target_layer, layers: [{name, shape, layout, carries_gradient}]} of a registered classifier."""
    from core.models.target import candidate_layers, target_spec

    model, row = load_classifier(int(model_id), "cpu")
    size = int(row["config"].get("image_size") or row["config"].get("input_size") or 64)
    root = getattr(model, "net", model)
    hint = getattr(root, "num_prefix_tokens", None)
    layers = candidate_layers(root, model, size, 1, hint if isinstance(hint, int) else None)
    chosen = getattr(model, "target_layer", None) or target_spec(model).name
    return {"model_id": int(model_id), "arch": row["arch"], "target_layer": chosen,
            "layers": [l.to_dict() for l in layers]}


WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")


def save_weights_upload(filename: str, data: bytes, *, user_id: int) -> Path:
    """A weights file uploaded in the browser, stored under $EXEMPLAR_HOME/uploads/weights by its content hash
    (the page never passes a server path a user typed)."""
    actor = require(acting(user_id), "model.import")
    suffix = Path(filename).suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{filename}: a weights file must end with {', '.join(WEIGHT_SUFFIXES)}")
    folder = get_settings().path("uploads", "weights")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    audit.record(actor, "model.upload", f"upload:{path.name}", after={"bytes": len(data), "suffix": suffix})
    return path


def import_job(ctx) -> dict:
    """`model.import` job. params: arch, weights, dataset, classes, input_size, channels, normalize, target_layer,
    name, build_kwargs, device."""
    p = dict(ctx.params)
    res = import_model(p["arch"], p["weights"], p["dataset"], user_id=ctx.user_id, classes=p.get("classes"),
                       input_size=int(p["input_size"]) if p.get("input_size") else None,
                       channels=int(p.get("channels") or 3), normalize=p.get("normalize") or "imagenet",
                       target_layer=p.get("target_layer"), name=p.get("name"), build_kwargs=p.get("build_kwargs"),
                       device=p.get("device"),
                       job_id=ctx.job_id, progress=ctx.progress)
    return res.to_dict()
