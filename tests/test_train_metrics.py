"""Classification metrics: hand-computed confusion, accuracy, macro F1, per-class table; NaN where undefined."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.metrics.classification import accuracy, classification_report, confusion, macro_f1, per_class


def test_confusion_rows_are_true_columns_predicted():
    cm = confusion(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_accuracy_macro_f1_and_per_class_by_hand():
    y = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 0, 2])
    assert accuracy(y, p) == pytest.approx(4 / 6)
    # class 0: P 1/2 R 1/2 F1 .5; class 1: P 1/2 R 1 F1 2/3; class 2: P 1 R 2/3 F1 .8
    assert macro_f1(y, p, 3) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    pc = per_class(y, p, ["a", "b", "c"])
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})


def test_undefined_cases_are_nan_not_zero():
    assert math.isnan(accuracy(np.array([], int), np.array([], int)))
    pc = per_class(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert pc["a"]["f1"] == 1.0
    assert math.isnan(pc["b"]["precision"]) and math.isnan(pc["b"]["f1"])  # class b neither present nor predicted
    # a present class never predicted has F1 0 (not NaN) and counts in the macro mean
    assert macro_f1(np.array([0, 1]), np.array([0, 0]), 2) == pytest.approx((2 / 3 + 0.0) / 2)


def test_report_is_json_ready_and_checks_labels():
    rep = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), ["x", "y"])
    assert set(rep) == {"n", "accuracy", "macro_f1", "per_class", "confusion"}
    assert rep["confusion"] == [[1, 0], [1, 1]] and rep["n"] == 3
    with pytest.raises(ValueError):
        confusion(np.array([0, 3]), np.array([0, 1]), 2)
