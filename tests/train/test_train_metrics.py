"""mammotrain.metrics: hand-computed tiny cases, cross-checked against scikit-learn and an
independent (kernel-matrix) DeLong; bootstrap intervals checked for what they must do."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mammotrain.metrics import (binary_auc, bootstrap_ci, classification_metrics,
                                confusion_matrix, delong_test, macro_roc, mean_std,
                                paired_bootstrap, per_breast, probabilistic_f1, roc_curve,
                                sensitivity_at_specificity, undefined_reason)


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


def test_undefined_values_are_nan_not_a_convention():
    # all positives: AUC and specificity are undefined (no negatives); recall is defined
    m = classification_metrics([1, 1, 1], _binary_probs([0.9, 0.2, 0.7]))
    assert math.isnan(m["auc"]) and math.isnan(m["specificity"])
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    # all negatives: recall and F1 have no positives to count
    m = classification_metrics([0, 0, 0], _binary_probs([0.9, 0.2, 0.1]))
    assert math.isnan(m["recall"]) and math.isnan(m["f1"]) and math.isnan(m["auc"])
    assert m["specificity"] == pytest.approx(2 / 3) and m["precision"] == 0.0
    assert undefined_reason([0, 0, 0], 2, ("benign", "malignant")) == "one class only (3 benign)"
    assert undefined_reason([], 2) == "no examples" and undefined_reason([0, 1], 2) is None
    assert mean_std([0.5, 0.7, float("nan")]) == pytest.approx((0.6, 0.1))
    with pytest.raises(ValueError):
        classification_metrics([0, 1], np.zeros((3, 2)))


def test_macro_metrics_skip_an_absent_class():
    # density-like: 4 classes, class 3 (D) never occurs in y but is predicted once
    y = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    probs = np.array([[.7, .1, .1, .1], [.2, .5, .2, .1], [.1, .6, .2, .1], [.1, .2, .3, .4],
                      [.1, .1, .7, .1], [.2, .2, .5, .1], [.3, .3, .3, .1], [.1, .7, .1, .1]])
    m = classification_metrics(y, probs)
    pred = probs.argmax(1)
    present = [0, 1, 2]
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        want = fn(y, pred, labels=present, average="macro", zero_division=0)
        assert m[name] == pytest.approx(want), name
    # one-vs-rest AUC over the present classes only (class D has no positive)
    want_auc = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in present])
    assert m["auc"] == pytest.approx(want_auc)
    cm = skm.confusion_matrix(y, pred, labels=[0, 1, 2, 3])
    spec = [(cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum())
            for c in present]
    assert m["specificity"] == pytest.approx(np.mean(spec))
    # counting the absent class as 0 would have lowered recall to 3/4 of this
    assert m["recall"] > skm.recall_score(y, pred, labels=[0, 1, 2, 3], average="macro",
                                          zero_division=0)
    assert undefined_reason(y, 4, "ABCD") == "class D absent (macro over 3 of 4)"


def test_sensitivity_at_90_specificity_hand_case():
    # 10 negatives at 0.0..0.9, 4 positives; thresholds with FPR <= 0.1 allow one negative
    # above: positives scoring above 0.8 (0.95, 0.85) -> 2 of 4
    neg = np.arange(10) / 10
    pos = np.array([0.95, 0.85, 0.5, 0.1])
    y = np.r_[np.zeros(10), np.ones(4)]
    s = np.r_[neg, pos]
    assert sensitivity_at_specificity(y, s, 0.9) == pytest.approx(0.5)
    assert sensitivity_at_specificity(y, s, 0.5) == pytest.approx(0.75)   # > 0.45: 3 of 4
    assert math.isnan(sensitivity_at_specificity(np.ones(3), [0.1, 0.2, 0.3]))


def test_probabilistic_f1_hand_case():
    # RSNA pF1: pTP = 0.9 + 0.6 = 1.5, pFP = 0.2 + 0.3 = 0.5 -> precision 0.75,
    # recall 1.5 / 2 = 0.75 -> pF1 0.75; scores are clipped to [0, 1]
    y = [1, 1, 0, 0, 0]
    assert probabilistic_f1(y, [0.9, 0.6, 0.2, 0.3, 0.0]) == pytest.approx(0.75)
    assert probabilistic_f1(y, [1.4, 0.6, 0.2, 0.3, -1]) == pytest.approx(
        2 * (1.6 / 2.1) * 0.8 / ((1.6 / 2.1) + 0.8))
    assert probabilistic_f1(y, [0, 0, 0.5, 0.5, 0]) == 0.0
    assert math.isnan(probabilistic_f1([0, 0], [0.1, 0.2]))
    # per breast: the mean score of a breast's views, label = any view's
    yb, sb = per_breast(["b", "a", "b", "a"], [1, 0, 1, 0], [0.2, 0.4, 0.6, 0.0])
    assert yb.tolist() == [0, 1] and sb == pytest.approx([0.2, 0.4])


def _delong_direct(y, sa, sb):
    """DeLong's variance from the full kernel matrix psi(x_i, y_j) (O(m n)): an independent
    implementation of the structural components."""
    y = np.asarray(y, bool)
    comps = []
    for s in (np.asarray(sa, float), np.asarray(sb, float)):
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        comps.append((psi.mean(1), psi.mean(0), psi.mean()))
    m, n = y.sum(), (~y).sum()
    s10 = np.cov(np.array([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.array([comps[0][1], comps[1][1]]))
    c = np.array([-1.0, 1.0])
    var = c @ s10 @ c / m + c @ s01 @ c / n
    return comps[1][2] - comps[0][2], var


def test_delong_matches_the_kernel_definition():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    sa = np.round(rng.random(60) + 0.3 * y, 1)  # ties on purpose
    sb = np.round(rng.random(60) + 0.8 * y, 1)
    d = delong_test(y, sa, sb)
    delta, var = _delong_direct(y, sa, sb)
    assert d["auc_a"] == pytest.approx(skm.roc_auc_score(y, sa))
    assert d["auc_b"] == pytest.approx(skm.roc_auc_score(y, sb))
    assert d["delta"] == pytest.approx(delta) and d["se"] == pytest.approx(math.sqrt(var))
    assert d["p"] == pytest.approx(math.erfc(abs(delta / math.sqrt(var)) / math.sqrt(2)))
    assert delong_test(y, sa, sa)["p"] == 1.0


def test_patient_bootstrap_keeps_patients_together():
    # each patient's row repeated 5 times: resampling patients must give the intervals of
    # the one-row-per-patient data (same draws); resampling rows would make them narrower
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    p1 = np.clip(0.3 * y + rng.random(40), 0, 1)
    patients = np.arange(40)
    one = bootstrap_ci(y, _binary_probs(p1), patients, n_boot=300, seed=4)
    rep = bootstrap_ci(np.repeat(y, 5), _binary_probs(np.repeat(p1, 5)),
                       np.repeat(patients, 5), n_boot=300, seed=4)
    rows = bootstrap_ci(np.repeat(y, 5), _binary_probs(np.repeat(p1, 5)), np.arange(200),
                        n_boot=300, seed=4)
    for k in ("auc", "recall", "specificity", "sens_at_90spec"):
        assert rep[k] == pytest.approx(one[k]), k
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(rows["auc"]) < 0.7 * width(rep["auc"])
    point = classification_metrics(y, _binary_probs(p1))["auc"]
    assert one["auc"][0] < point < one["auc"][1]


def test_paired_bootstrap_detects_a_better_model_and_not_a_copy():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    patients = np.arange(120) // 2
    weak = _binary_probs(np.clip(0.15 * y + rng.random(120), 0, 1))
    strong = _binary_probs(np.clip(0.6 * y + 0.4 * rng.random(120), 0, 1))
    r = paired_bootstrap(y, weak, strong, patients, n_boot=500)
    assert r["delta"] == pytest.approx(skm.roc_auc_score(y, strong[:, 1])
                                       - skm.roc_auc_score(y, weak[:, 1]))
    assert r["delta"] > 0.2 and r["ci_low"] > 0 and r["p"] < 0.01
    same = paired_bootstrap(y, weak, weak, patients, n_boot=200)
    assert same["delta"] == 0 and same["p"] == 1.0


def test_underpowered_report_says_so():
    """A pooled test set under 30 examples, or under 10 of a class, is flagged; a single
    fold gets no '± 0.00'."""
    import numpy as np

    from mammotrain.report import FoldStat, underpowered

    assert "only 3 test examples" in underpowered(np.array([0, 1, 1]), 2)
    assert underpowered(np.array([0] * 15 + [1] * 25), 2) == ""
    assert "[35, 5]" in underpowered(np.array([0] * 35 + [1] * 5), 2)
    assert "[20, 20, 0]" in underpowered(np.array([0] * 20 + [1] * 20), 3)  # absent class
    assert FoldStat(1.0, 0.0, 1, 1).text() == "100.00 (1 fold: no spread)"
    assert FoldStat(0.8, 0.05, 3, 3).text() == "80.00 ± 5.00"
