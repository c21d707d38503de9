"""A classifier leaves Exemplar in a form outside code loads (docs/architecture.md, "Your own classifier").

- safetensors: the source network's own key names (an imported network's `net.` prefix dropped), so the file loads
  with strict=True into the same torchvision / timm / factory network;
- pt2: a torch.export program, taking a batch of any size of images in [0, 1] with the model's channels at its input
  size and normalising inside (TorchScript is deprecated in this torch);
- onnx: the same program as ONNX (needs the onnx and onnxscript packages; checked through onnxruntime).

Outputs are in the network's own class order (an import's --classes order), as the user's code expects.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from core.model_io_names import FORMATS  # the names, written once (re-exported)


class Portable(nn.Module):
    """What an exported program computes: normalise images in [0, 1], run the network, return its logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.imported = hasattr(model, "net")
        self.model = model.net if self.imported else model
        if self.imported:
            self.register_buffer("mean", model.norm_mean.detach().clone())
            self.register_buffer("std", model.norm_std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.imported:  # Exemplar's own classifiers normalise (and resize) inside
            return self.model(x)
        from core.models.imported import as_logits

        return as_logits(self.model((x - self.mean) / self.std))


def input_shape(model: nn.Module, image_size: int) -> tuple[int, int]:
    """(channels, side) of what an exported program takes."""
    if hasattr(model, "net"):
        return int(model.channels), int(model.input_size or image_size)
    return 1, int(getattr(model, "input_size", None) or image_size)


def source_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights under the source's key names."""
    state = model.state_dict()
    if hasattr(model, "net"):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def portable_input(model: nn.Module, x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Dataset images in [0, 1] (N, 1, H, W) → what the exported program takes (resized, channels repeated)."""
    from core.models.base import resize_input

    c, s = input_shape(model, image_size)
    x = resize_input(x, s)
    return x.expand(-1, c, -1, -1) if x.shape[1] != c else x


def write_safetensors(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(source_state_dict(model), str(path))
    return path


def write_pt2(model: nn.Module, path: Path, image_size: int) -> Path:
    c, s = input_shape(model, image_size)
    prog = Portable(model).eval()
    example = (torch.rand(2, c, s, s),)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        ep = torch.export.export(prog, example, dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path))
    return path


def write_onnx(model: nn.Module, path: Path, image_size: int) -> Path:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ValueError("ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript "
                         "onnxruntime (or export --format pt2)") from None
    import contextlib
    import sys

    c, s = input_shape(model, image_size)
    prog = Portable(model).eval()
    # the exporter reports its steps on stdout, where the CLI's --json object goes: send them to stderr
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(prog, (torch.rand(2, c, s, s),), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},), dynamo=True,
                          verbose=False)
    return path


WRITERS = {"safetensors": lambda m, p, s: write_safetensors(m, p), "pt2": write_pt2, "onnx": write_onnx}


def reference_logits(model: nn.Module, xp: torch.Tensor) -> torch.Tensor:
    """The registered model's logits in the network's own order for portable inputs xp."""
    with torch.no_grad():
        return Portable(model).eval()(xp)


def reload_logits(fmt: str, path: Path, fresh: nn.Module | None, xp: torch.Tensor) -> torch.Tensor:
    """Logits of what was written, loaded back as outside code would: safetensors strict into `fresh` (a new
    network of the same architecture, wrapped like the model), the .pt2 through torch.export.load, ONNX through
    onnxruntime."""
    with torch.no_grad():
        if fmt == "safetensors":
            from safetensors.torch import load_file

            target = fresh.net if hasattr(fresh, "net") else fresh
            target.load_state_dict(load_file(str(path)), strict=True)
            return Portable(fresh).eval()(xp)
        if fmt == "pt2":
            return torch.export.load(str(path)).module()(xp)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: xp.numpy()})[0])
