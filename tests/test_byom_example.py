"""examples/train_torchvision.py, the newcomer's path: plain PyTorch trains a ResNet-18 on images of its own, and
`exemplar models import` takes the state dict it saved (tiny sizes)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_torchvision.py"


def test_example_trains_without_exemplar_and_its_model_imports(tmp_path):
    from typer.testing import CliRunner

    from services.cli import app
    from services.data.datasets import synth_dataset

    outside = synth_dataset("outside", n=40, size=32, seed=1, user_id=None)
    synth_dataset("t", n=48, size=32, seed=0, user_id=None)
    out = tmp_path / "r18.pt"
    run = subprocess.run([sys.executable, str(EXAMPLE), "--root", outside["root"], "--epochs", "1", "--size", "32",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "from services" not in EXAMPLE.read_text() and "from core" not in EXAMPLE.read_text()
    assert out.is_file() and "epoch 1: loss" in run.stdout
    r = CliRunner().invoke(app, ["models", "import", "--arch", "torchvision:resnet18", "--weights", str(out),
                                 "--dataset", "t", "--input-size", "32", "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout.strip().splitlines()[-1])
    assert j["missing_keys"] == [] and j["target_layer"] == "layer3" and 0 <= j["metrics"]["test"]["accuracy"] <= 1
