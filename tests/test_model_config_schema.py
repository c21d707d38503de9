"""Model.config's retrain sub-objects have a schema (services/models/config_schema.py): a retrain's configs pass and
read back as dataclasses; a config that does not match is refused in one line before anything is written."""
from __future__ import annotations

import pytest

from services.models.catalog import list_models
from services.models.registry import register_model
from services.models.config_schema import RetrainLink, XBLConfig, check_config, retrain_link, xbl_config

XBL = {"method": "exbl", "settings": {"lam": 1.0}, "finetune": {"seed": 3}, "seeds": 2,
       "pair": {"good": 1, "bad": 2}, "pair_source": "picked", "epoch_seconds": [0.5], "parent_run_id": 7,
       "order_digest": "ab12"}
CHILD = {"arch": "simple_cnn", "xbl": XBL, "retrain_id": 4, "seed": 3, "role": "child", "control_id": 11,
         "random_control_id": 12}


def test_a_retrained_childs_config_reads_back_as_dataclasses():
    check_config("classifier", CHILD)
    x, link = xbl_config(CHILD), retrain_link(CHILD)
    assert isinstance(x, XBLConfig) and x.method == "exbl" and x.finetune["seed"] == 3
    assert link == RetrainLink(retrain_id=4, seed=3, role="child", control_id=11, random_control_id=12)
    assert xbl_config({"arch": "simple_cnn"}) is None and retrain_link({"arch": "simple_cnn"}) is None


@pytest.mark.parametrize("config, words", [
    ({**CHILD, "xbl": {**XBL, "lamda": 2}}, "unknown keys ['lamda']"),
    ({**CHILD, "xbl": {k: v for k, v in XBL.items() if k != "method"}}, "missing keys ['method']"),
    ({**CHILD, "xbl": "exbl"}, "must be an object"),
    ({**CHILD, "role": "parent"}, "retrain role must be one of"),
    ({**CHILD, "control_id": "11"}, "must be an integer id"),
    ({"arch": "simple_cnn", "control_of": 5}, "without a retrain_id"),
])
def test_a_config_that_does_not_match_is_refused_in_one_line(config, words):
    with pytest.raises(ValueError) as exc:
        check_config("classifier", config)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_other_kinds_keep_their_own_configs():
    check_config("ddpm", {"xbl": "anything", "role": "whatever"})


def test_register_model_refuses_a_bad_config_before_writing(tmp_path, exemplar_home):
    before = len(list_models())
    with pytest.raises(ValueError, match="retrain role"):
        register_model(name="bad", arch="simple_cnn", checkpoint=tmp_path / "nowhere",
                       config={**CHILD, "role": "grandchild"})
    assert len(list_models()) == before
