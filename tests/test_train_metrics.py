"""mammotrain.metrics: hand-computed tiny cases, cross-checked against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mammotrain.metrics import (binary_auc, classification_metrics, confusion_matrix,
                                macro_roc, mean_std, roc_curve)


def _binary_probs(p1):
    p1 = np.asarray(p1, float)
    return np.stack([1 - p1, p1], 1)


def test_binary_hand_case():
    # pred = [0, 1, 0, 1, 1]: TP 2, FP 1, FN 1, TN 1; AUC: 5 of 6 pairs ordered
    y = [0, 0, 1, 1, 1]
    m = classification_metrics(y, _binary_probs([0.1, 0.6, 0.4, 0.8, 0.9]))
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["n"] == 5


def test_binary_against_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    p1 = np.round(rng.random(40), 1)  # ties on purpose
    m = classification_metrics(y, _binary_probs(p1))
    pred = (p1 > 0.5).astype(int)  # argmax of [1-p, p]: ties at 0.5 go to class 0
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))


def test_auc_with_ties_is_one_half_per_tied_pair():
    assert binary_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(3.5 / 4)
    assert binary_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(
        skm.roc_auc_score([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]))
    assert math.isnan(binary_auc([1, 1], [0.2, 0.3]))


def test_multiclass_against_sklearn():
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3],
                      [0.5, 0.3, 0.2], [0.6, 0.1, 0.3], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, probs)
    pred = probs.argmax(1)
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr",
                                                        average="macro"))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        assert m[name] == pytest.approx(fn(y, pred, average="macro", zero_division=0)), name
    cm = skm.confusion_matrix(y, pred)
    spec = [(cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum())
            for c in range(3)]
    assert m["specificity"] == pytest.approx(np.mean(spec))
    assert (confusion_matrix(y, pred, 3) == cm).all()


def test_roc_curve_matches_sklearn():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.35, 0.2, 0.7])
    fpr, tpr = roc_curve(y, s)
    sf, st, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    grid = np.linspace(0, 1, 11)
    np.testing.assert_allclose(macro_roc(y, _binary_probs(s), grid), np.interp(grid, sf, st))


def test_undefined_values_and_mean_std():
    m = classification_metrics([1, 1, 1], _binary_probs([0.9, 0.2, 0.7]))
    assert math.isnan(m["auc"]) and m["specificity"] == 0.0 and m["recall"] == pytest.approx(2 / 3)
    assert mean_std([0.5, 0.7, float("nan")]) == pytest.approx((0.6, 0.1))
    with pytest.raises(ValueError):
        classification_metrics([0, 1], np.zeros((3, 2)))
