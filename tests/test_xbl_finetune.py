"""On a small planted-confounder SynthCXR set (48 px, marker corner = class with p 0.9) the shared fine-tune
loop works end to end: a few epochs of exbl raise AR and keep accuracy, the share of active triplets falls, the
per-epoch rows hold train / val only, a plain-CE control with the same config sees the same batches, two-click
counterexamples raise test_shifted accuracy, frozen blocks stay frozen.
(Before the CAM path lost its dropout, this test also saw exbl lower WR; with training and reference anchors in
one mode it does not here: WR 0.167 → 0.169, so that claim is no longer asserted.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import synthcxr
from core.metrics.localisation import localisation_metrics
from core.models import create_model
from core.train.classifier import TrainConfig, fit
from core.xbl import Exemplar, TrainSet, get_method
from core.xbl import cam as C
from core.xbl.finetune import EvalSet, FinetuneConfig, accuracy, explanation_metrics, finetune


@pytest.fixture(scope="module")
def planted():
    torch.set_num_threads(2)
    d = synthcxr.generate(800, 48, 0.9, 0)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    sets = {}
    for s in ("train", "val", "test", "test_shifted"):
        i = np.flatnonzero(d.splits == s)
        sets[s] = EvalSet(t(d.images[i])[:, None], t(d.labels[i]).long(), t(d.lung[i]), t(d.marker[i]))
    torch.manual_seed(0)
    m = create_model("simple_cnn", 4, 1, width=8, stem_pool=True)
    tr, va = sets["train"], sets["val"]
    fit(m, tr.x, tr.y, va.x, va.y, TrainConfig(epochs=6, lr=3e-3))
    # the two clicks of the demo story: a correct map on the lungs (WR 0, highest AR) and a map on the marker
    x = tr.x.float() / 255
    f = m.eval().forward_features(x).detach().requires_grad_(True)
    lg = m.forward_head(f)
    cam = C.gradcam(f, lg, lg.argmax(1), create_graph=False).detach()
    mt = localisation_metrics(C.upsample(cam, (48, 48)), tr.lung, tr.marker)
    pred = lg.argmax(1)
    ok = (mt["wr"].nan_to_num(1.0) == 0) & (pred == tr.y)
    g = int(torch.argmax(torch.where(ok, mt["ar"].nan_to_num(-1.0), torch.full_like(mt["ar"], -9.0))))
    b = int(torch.argmax(mt["wr"].nan_to_num(-1.0) * 10 - mt["ar"].nan_to_num(0.0)))
    assert float(mt["wr"][b]) > 0.5 and float(mt["wr"][g]) == 0.0
    state = {k: v.clone() for k, v in m.state_dict().items()}
    return sets, state, Exemplar(x[g], int(pred[g])), Exemplar(x[b], int(pred[b]))


def _run(planted, name, epochs=3, freeze=0, **settings):
    sets, state, good, bad = planted
    m = create_model("simple_cnn", 4, 1, width=8, stem_pool=True)
    m.load_state_dict(state)
    tr = sets["train"]
    res = finetune(m, get_method(name, **settings), TrainSet(tr.x, tr.y, tr.lung), good, bad,
                   FinetuneConfig(epochs=epochs, lr=1e-3, freeze_blocks=freeze), val=sets["val"])
    return m, res


def _parent(planted):
    sets, state, _, _ = planted
    m = create_model("simple_cnn", 4, 1, width=8, stem_pool=True)
    m.load_state_dict(state)
    return m.eval()


def test_a_few_epochs_of_exbl_raise_ar_and_lower_wrong_reason(planted):
    sets = planted[0]
    base = explanation_metrics(_parent(planted), sets["test"])
    m, res = _run(planted, "exbl")  # the defaults
    after = explanation_metrics(m, sets["test"])
    assert after["ar"] > base["ar"] + 0.03, (base, after)
    assert accuracy(m, sets["test"]) >= accuracy(_parent(planted), sets["test"]) - 0.02
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3]
    for k in ("ce", "expl", "active", "d_pos", "d_neg", "val_acc", "val_ar", "val_ap", "val_wr", "seconds"):
        assert all(np.isfinite(r[k]) for r in h), k
    assert not any(k.startswith(("test", "shifted")) for r in h for k in r)  # train / val only, per epoch
    # the control (plain CE, same config) saw the very same batches
    assert res.order_digest and _run(planted, "ce", epochs=3)[1].order_digest == res.order_digest
    assert h[-1]["active"] <= h[0]["active"]
    assert len(res.epoch_seconds) == 3


def test_two_click_counterexamples_raise_shifted_accuracy(planted):
    sets = planted[0]
    before = accuracy(_parent(planted), sets["test_shifted"])
    m, res = _run(planted, "counterexamples")
    assert accuracy(m, sets["test_shifted"]) > before + 0.08
    assert "cf_wrong" in res.history[0]


def test_frozen_blocks_stay_frozen(planted):
    m, _ = _run(planted, "exbl", epochs=1, freeze=2)
    state = planted[1]
    for k, v in m.state_dict().items():
        if k.startswith(("blocks.0.", "blocks.1.")):
            torch.testing.assert_close(v, state[k])
    assert not torch.equal(m.state_dict()["blocks.3.1.weight"], state["blocks.3.1.weight"])
    with pytest.raises(ValueError, match="freeze"):
        _run(planted, "exbl", epochs=1, freeze=4)
