"""Your own classifier in and out (issue 21): refusals in one line that leave nothing registered, the class order,
the chance warning, layers, a retrain and its export with a model card, the CLI and the Models page form."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from core.models.imported import ImportRefused, parse_normalize
from core.models.target import TargetRefused

SIZE = 32


def _me() -> int:
    """The acting user of these tests (a write never runs without one)."""
    from services.team.users import get_or_create_user

    return get_or_create_user("tester")


@pytest.fixture
def ds():
    from services.data.datasets import synth_dataset

    return synth_dataset("t", n=60, size=SIZE, confounder=0.9, seed=0, user_id=None)["dataset_id"]


def _resnet(path, classes=4, seed=0):
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=classes).eval()
    torch.save(net.state_dict(), path)
    return net


def _rows():
    from services.models.catalog import list_models

    return list_models(kind=None)


def _import(ds, weights, **kw):
    from services.models.model_import import import_model

    return import_model(kw.pop("arch", "torchvision:resnet18"), weights, ds, user_id=_me(), input_size=SIZE, **kw)


def test_import_matches_the_network_run_outside(ds, tmp_path):
    from services.data.datasets import load_arrays
    from services.models.registry import load_classifier

    net = _resnet(tmp_path / "r.pt")
    res = _import(ds, tmp_path / "r.pt")
    # at 32 px ResNet's layer4 is 1 × 1 (not spatial): the rule takes the last spatial layer, layer3
    assert res.target_layer == "layer3" and res.channels == 3 and res.input_size == SIZE
    assert res.normalize["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert {"val", "test", "test_shifted"} == set(res.metrics)
    model, row = load_classifier(res.model_id, "cpu")
    assert row["config"]["imported"]["weights_sha256"]
    arrays = load_arrays(ds)
    x = torch.from_numpy(arrays.images[:8]).float().div(255)[:, None]
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x.repeat(1, 3, 1, 1) - mean) / std))


def test_head_mismatch_pickle_and_key_mismatch_are_refused_and_register_nothing(ds, tmp_path):
    _resnet(tmp_path / "five.pt", classes=5)
    with pytest.raises(ValueError, match="5 outputs but dataset t has 4 classes"):
        _import(ds, tmp_path / "five.pt")
    torch.save({"model": torchvision.models.resnet18(num_classes=4)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="not a plain weights file"):
        _import(ds, tmp_path / "pickled.pt")
    net = _resnet(tmp_path / "r.pt")
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "dp.pt")
    with pytest.raises(ValueError, match="missing keys.*module\\."):
        _import(ds, tmp_path / "dp.pt")
    with pytest.raises(ValueError, match="weights do not fit torchvision:resnet34"):
        _import(ds, tmp_path / "r.pt", arch="torchvision:resnet34")
    with pytest.raises(ImportRefused, match="SOURCE:NAME"):
        _import(ds, tmp_path / "r.pt", arch="resnet18")
    with pytest.raises(ImportRefused, match="no classification network"):
        _import(ds, tmp_path / "r.pt", arch="torchvision:resnet_9000")
    with pytest.raises(TargetRefused, match="--target-layer 'nope'"):
        _import(ds, tmp_path / "r.pt", target_layer="nope")
    assert _rows() == []


def test_class_order_maps_the_networks_outputs_to_the_dataset_classes(ds, tmp_path):
    from services.data.datasets import get_dataset
    from services.models.registry import load_classifier

    net = _resnet(tmp_path / "r.pt")
    classes = get_dataset(ds)["classes"]
    rev = list(reversed(classes))
    res = _import(ds, tmp_path / "r.pt", classes=",".join(rev))
    model, _ = load_classifier(res.model_id, "cpu")
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        own = net((x.repeat(1, 3, 1, 1) - torch.tensor([0.485, 0.456, 0.406])[:, None, None])
                  / torch.tensor([0.229, 0.224, 0.225])[:, None, None])
        torch.testing.assert_close(model(x), own.flip(1))
    with pytest.raises(ValueError, match="--classes must name each"):
        _import(ds, tmp_path / "r.pt", classes="a,b")


def test_wrong_preprocessing_shows_as_chance_and_says_so(ds, tmp_path):
    from services.models.model_import import chance_warning

    assert "within 0.05 of chance" in chance_warning({"val": {"accuracy": 0.27}}, 4)
    assert chance_warning({"val": {"accuracy": 0.6}}, 4) is None
    assert parse_normalize("0.5,0.25", 3) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ImportRefused, match="--normalize"):
        parse_normalize("1,2,3", 3)


def test_layers_list_candidates_and_the_chosen_one_for_a_vit(ds, tmp_path):
    import timm

    from services.models.model_import import list_layers

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, num_classes=4)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "v.safetensors"))
    res = _import(ds, tmp_path / "v.safetensors", arch="timm:vit_tiny_patch16_224")
    assert res.target_layer == "blocks.11.norm1"
    out = list_layers(res.model_id)
    assert out["target_layer"] == "blocks.11.norm1" and len(out["layers"]) >= 3
    chosen = next(l for l in out["layers"] if l["name"] == out["target_layer"])
    assert chosen["layout"] == "tokens" and chosen["prefix"] == 1 and chosen["shape"] == [192, 2, 2]
    # the class-token ViT's last block output does not reach the logits: refused as a target, with the advice
    with pytest.raises(TargetRefused, match="does not reach the logits"):
        _import(ds, tmp_path / "v.safetensors", arch="timm:vit_tiny_patch16_224", target_layer="blocks.11")


def test_retrain_then_export_loads_strict_outside_with_a_model_card(ds, tmp_path):
    from services.models.model_export import export_model
    from services.retraining.retrain import retrain

    parent = _resnet(tmp_path / "r.pt")
    res = _import(ds, tmp_path / "r.pt")
    out = retrain(res.model_id, "exbl_cf", auto=True, epochs=1, batch_size=16, user_id=_me(), train_last=2)
    child = out.model_id
    exp = export_model(child, "safetensors", tmp_path / "out", user_id=_me())
    fresh = torchvision.models.resnet18(num_classes=4)
    fresh.load_state_dict(load_file(exp.path), strict=True)
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, parent.state_dict()[k])]
    assert changed and all(k.startswith(("layer4.", "fc.")) for k in changed), changed  # train only the last 2
    assert exp.max_abs_logit_diff <= 1e-5 and exp.checked_images == 16
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["architecture"] == "torchvision:resnet18" and card["retraining"]["method"] == "exbl_cf"
    assert [m["method"] for m in card["lineage"]] == ["imported", "exbl_cf"]
    assert len(card["dataset"]["content_sha256"]) == 64 and card["verdict"]
    assert {"val", "test", "test_shifted"} <= set(card["held_out"])
    assert "exbl_cf" in (tmp_path / "out" / "README.md").read_text()
    pt2 = export_model(child, "pt2", tmp_path / "out2", user_id=_me())
    assert pt2.max_abs_logit_diff <= 1e-4
    program = torch.export.load(pt2.path).module()
    assert program(torch.rand(7, 3, SIZE, SIZE)).shape == (7, 4)  # any batch size
    onnx = export_model(child, "onnx", tmp_path / "out3", user_id=_me())  # reloaded through onnxruntime
    assert onnx.path.endswith(".onnx") and onnx.max_abs_logit_diff <= 1e-4


def test_cli_import_layers_export(ds, tmp_path):
    from typer.testing import CliRunner

    from services.cli import app

    _resnet(tmp_path / "r.pt")
    run = CliRunner().invoke
    r = run(app, ["models", "import", "--arch", "torchvision:resnet18", "--weights", str(tmp_path / "r.pt"),
                  "--dataset", "t", "--input-size", str(SIZE), "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"model_id", "arch", "target_layer", "input_size", "channels", "normalize", "classes", "missing_keys",
            "unexpected_keys", "metrics"} <= set(j)
    assert set(j["metrics"]["test"]) >= {"accuracy", "auroc", "ece"}
    r = run(app, ["models", "layers", "--model", str(j["model_id"]), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["target_layer"] == "layer3"
    r = run(app, ["models", "export", "--model", str(j["model_id"]), "--format", "nope", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--format must be one of" in r.output


def test_a_researcher_cannot_run_code_and_an_export_never_overwrites(ds, tmp_path):
    from services.models.model_export import export_model
    from services.models.model_import import import_model
    from services.team.roles import PermissionRefused
    from services.team.users import get_or_create_user
    from services.team.access import set_role

    admin = get_or_create_user("tester")
    rex = set_role(admin, "rex", "researcher")["id"]
    _resnet(tmp_path / "r.pt")
    with pytest.raises(PermissionRefused, match="python"):
        import_model("python:sys:exit", tmp_path / "r.pt", ds, user_id=rex)
    with pytest.raises(ImportRefused, match="failed: SystemExit"):  # an admin's factory that exits is refused
        import_model("python:sys:exit", tmp_path / "r.pt", ds, user_id=admin)
    res = _import(ds, tmp_path / "r.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("mine")
    with pytest.raises(ValueError, match="already holds README.md"):
        export_model(res.model_id, "safetensors", tmp_path / "out", user_id=_me())
    assert (tmp_path / "out" / "README.md").read_text() == "mine"


def test_a_reader_cannot_import(ds, tmp_path):
    from services.models.model_import import import_model
    from services.team.roles import PermissionRefused
    from services.team.users import get_or_create_user
    from services.team.access import set_role

    _resnet(tmp_path / "r.pt")
    admin = get_or_create_user("tester")
    rita = set_role(admin, "rita", "reader")["id"]
    with pytest.raises(PermissionRefused):
        import_model("torchvision:resnet18", tmp_path / "r.pt", ds, user_id=rita, input_size=SIZE)
    assert _rows() == []


def test_models_page_import_and_export_forms(ds, tmp_path):
    """The import form asks for an upload (AppTest cannot upload: the upload is stored through the same service
    call the form makes), shows the job's figures; the export form writes under EXEMPLAR_HOME and offers the files."""
    from services.jobs import lifecycle as jobs
    from services.models.model_import import save_weights_upload
    from services.team.users import get_or_create_user
    from tests.helpers_app import app_test, open_page

    _resnet(tmp_path / "r.pt")
    uid = get_or_create_user("tester")
    user = {"id": uid, "name": "tester"}
    at = open_page(app_test(user=user), "data_models")
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="models_import_arch").set_value("torchvision:resnet18")
    at.button(key="models_import_go").click().run()
    assert any("upload the weights file" in e.value for e in at.error)
    assert not [j for j in jobs.list_jobs() if j["kind"] == "model.import"]
    with pytest.raises(ValueError, match="must end with"):
        save_weights_upload("notes.txt", b"x", user_id=uid)
    path = save_weights_upload("r.pt", (tmp_path / "r.pt").read_bytes(), user_id=uid)
    params = {"arch": "torchvision:resnet18", "weights": str(path), "dataset": "t", "input_size": SIZE}
    done = jobs.run_inline("model.import", params, uid, echo=False)
    at = open_page(app_test(user=user, models_import_job=done["id"]), "data_models")
    assert not at.exception, [e.value for e in at.exception]
    assert any("GradCAM layer layer3" in s.value for s in at.success)
    figures = next(df.value for df in at.dataframe if "macro AUROC" in df.value.columns)
    assert list(figures["split"]) == ["val", "test", "test_shifted"]
    at.button(key="models_export_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = next(j for j in jobs.list_jobs() if j["kind"] == "model.export")
    assert "out" not in job["params"]  # the web never names a server folder
    done = jobs.run_inline("model.export", job["params"], uid, echo=False)
    assert "/exports/" in done["result"]["path"]
    at = open_page(app_test(user=user, models_export_job=done["id"]), "data_models")
    assert {b.label for b in at.get("download_button")} >= {"model_card.json", "README.md"}


def test_exemplars_own_classifier_exports_too(tmp_path):
    from core.models import create_model
    from services.data.datasets import synth_dataset
    from services.models.model_export import export_model
    from services.models.registry import register_model, save_checkpoint_dir

    ds = synth_dataset("t", n=48, size=SIZE, seed=0, user_id=None)["dataset_id"]
    torch.manual_seed(0)
    m = create_model("simple_cnn", width=4, input_size=SIZE).eval()
    cfg = {"arch": "simple_cnn", "num_classes": 4, "in_chans": 1, "arch_kwargs": {"width": 4}, "input_size": SIZE,
           "image_size": SIZE, "classes": ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"], "dataset": "t"}
    mid = register_model(name="own", arch="simple_cnn", checkpoint=save_checkpoint_dir(m, cfg), dataset_id=ds,
                         config=cfg)
    st = export_model(mid, "safetensors", tmp_path / "a", user_id=_me())
    fresh = create_model("simple_cnn", width=4, input_size=SIZE)
    fresh.load_state_dict(load_file(st.path), strict=True)
    assert st.max_abs_logit_diff == 0.0
    pt2 = export_model(mid, "pt2", tmp_path / "b", user_id=_me())
    assert pt2.max_abs_logit_diff <= 1e-5
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(pt2.path).module()(x), m(x), atol=1e-5, rtol=1e-5)


def test_import_and_export_need_an_acting_user_and_are_audited(ds, tmp_path):
    from services.team.audit_log import list_rows
    from services.models.model_export import export_model
    from services.models.model_import import import_model

    _resnet(tmp_path / "r.pt")
    with pytest.raises(ValueError, match="needs an acting user"):
        import_model("torchvision:resnet18", tmp_path / "r.pt", ds, user_id=None, input_size=SIZE)
    res = _import(ds, tmp_path / "r.pt")
    with pytest.raises(ValueError, match="needs an acting user"):
        export_model(res.model_id, "safetensors", tmp_path / "o", user_id=None)
    assert not (tmp_path / "o").exists()
    export_model(res.model_id, "safetensors", tmp_path / "o", user_id=_me())
    actions = {r["action"]: r for r in list_rows(actor_id=_me())}
    assert actions["model.register"]["user"] == "tester" and actions["model.register"]["object"] == \
        f"model:{res.model_id}"
    assert actions["model.export"]["user"] == "tester" and actions["model.export"]["object"] == \
        f"model:{res.model_id}"
