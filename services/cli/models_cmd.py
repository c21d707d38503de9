"""`exemplar models import | layers | export`: your own classifier in, its target layers, the corrected one out."""
from __future__ import annotations

from pathlib import Path

import typer

from services.cli.common import emit, fail, run_job
from services.models.model_import import list_layers

IMPORT_KEYS = ("model_id", "name", "arch", "target_layer", "input_size", "channels", "normalize", "classes",
               "missing_keys", "unexpected_keys", "metrics", "warning")


def _metrics_line(metrics: dict) -> str:
    return "; ".join(f"{s} accuracy {m['accuracy']:.3f}, AUROC {m['auroc'] if m['auroc'] is None else round(m['auroc'], 3)}"
                     f", ECE {m['ece'] if m['ece'] is None else round(m['ece'], 3)}" for s, m in metrics.items())


def register(app: typer.Typer) -> None:
    from core.model_io_names import FORMATS, SOURCE_NAMES as SOURCES  # torch-free: `exemplar --help` stays light

    models_app = typer.Typer(help="Bring your own classifier in, list its target layers, export it.",
                             no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("import")
    def import_(arch: str = typer.Option(..., help=f"SOURCE:NAME, SOURCE one of {', '.join(SOURCES)} (e.g. "
                                                   f"torchvision:densenet121, timm:vit_tiny_patch16_224, "
                                                   f"python:mypkg.nets:make)"),
                weights: Path = typer.Option(..., help="state dict (.pt / .pth, loaded weights-only) or .safetensors"),
                dataset: str = typer.Option(..., help="dataset name or id"),
                classes: str = typer.Option(None, help="the network's output classes in order, A,B,… (default: "
                                                       "the dataset's order)"),
                input_size: int = typer.Option(None, "--input-size", help="side the network sees (default: the "
                                                                          "dataset's image size)"),
                channels: int = typer.Option(3, help="the network's input channels, 1 or 3 (grey images repeat)"),
                normalize: str = typer.Option("imagenet", help="imagenet | none | MEAN,STD"),
                target_layer: str = typer.Option(None, "--target-layer", help="GradCAM layer (default: the rule; "
                                                                              "see `models layers`)"),
                name: str = typer.Option(None, help="model name (default DATASET-NAME)"),
                build_kwargs: str = typer.Option(None, "--build-kwargs",
                                                 help="JSON object of the builder's other arguments, as your code "
                                                      "built the network, e.g. '{\"patch_size\": 8}'"),
                device: str = typer.Option(None, help="cpu | cuda | auto (default EXEMPLAR_DEVICE)"),
                queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
                json_: bool = typer.Option(False, "--json")):
        """Import a classifier; it is evaluated on val, test and test_shifted and registered."""
        if not weights.is_file():
            fail(f"weights file {weights} does not exist")
        import json

        try:
            extra = json.loads(build_kwargs) if build_kwargs else None
        except ValueError:
            fail(f"--build-kwargs is not JSON: {build_kwargs}")
        params = {"arch": arch, "weights": str(weights.expanduser().resolve()), "dataset": dataset,
                  "classes": classes, "input_size": input_size, "channels": channels, "normalize": normalize,
                  "target_layer": target_layer, "name": name, "device": device,
                  "build_kwargs": extra}
        res = run_job("model.import", params, json_, enqueue=queue)
        out = {k: res.get(k) for k in IMPORT_KEYS}
        human = (f"model #{res['model_id']} {res['name']} ({res['arch']}), target layer {res['target_layer']}: "
                 f"{_metrics_line(res['metrics'])}" + (f"\nwarning: {res['warning']}" if res.get("warning") else ""))
        emit(out, json_, human)

    @models_app.command("layers")
    def layers(model: int = typer.Option(..., help="classifier id"), json_: bool = typer.Option(False, "--json")):
        """Candidate GradCAM layers of a classifier with their output shapes, and the chosen one."""
        try:
            res = list_layers(model)
        except Exception as exc:  # noqa: BLE001  (a network's traced forward may fail in any way: one line)
            fail(f"{type(exc).__name__}: {exc}" if not isinstance(exc, (KeyError, ValueError)) else str(exc))
        human = "\n".join(f"{'*' if l['name'] == res['target_layer'] else ' '} {l['name']} {l['shape']} {l['layout']}"
                          f"{'' if l['carries_gradient'] else ' (no gradient to the logits)'}" for l in res["layers"])
        emit(res, json_, human)

    @models_app.command("export")
    def export(model: int = typer.Option(..., help="classifier id"),
               format_: str = typer.Option("safetensors", "--format", help=" | ".join(FORMATS)),
               out: Path = typer.Option(..., help="folder to write the model and its card into"),
               queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
               json_: bool = typer.Option(False, "--json")):
        """Write the model (source key names / torch.export / ONNX) and its model card; check it loads back."""
        if format_ not in FORMATS:
            fail(f"--format must be one of {', '.join(FORMATS)}")
        res = run_job("model.export", {"model_id": model, "format": format_, "out": str(out.expanduser().resolve())},
                      json_, enqueue=queue)
        emit(res, json_, f"wrote {res['path']} and {res['card']}; reloaded: max |Δlogit| "
                         f"{res['max_abs_logit_diff']:.2e} on {res['checked_images']} {res['checked_split']} images")
