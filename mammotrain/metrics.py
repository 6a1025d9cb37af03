"""Classification metrics in plain NumPy (cross-checked against scikit-learn in the tests).

Conventions: ``y`` int ``[N]`` class indices; ``probs`` float ``[N, K]`` class
probabilities (rows sum to 1); the prediction is the arg-max class (for K = 2 that is
``p1 >= 0.5`` up to ties). Binary metrics treat class 1 as positive. For K > 2, AUC,
precision, recall, F1 and specificity are unweighted means over classes of the
one-vs-rest values (macro); a class with no positive or no negative sample is left out of
the macro-AUC. Undefined values (AUC with one class present) are NaN; 0/0 ratios are 0, as in
scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """int64 ``[K, K]``: row = true class, column = predicted class."""
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``y == 1`` (Mann-Whitney U, ties count one half); NaN when
    only one class is present."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) float ``[T]`` from (0, 0) to (1, 1), one point per distinct threshold."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each threshold
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def macro_roc(y: np.ndarray, probs: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Mean one-vs-rest TPR ``[G]`` on the FPR ``grid`` (binary: the class-1 curve); None if
    no class has both positives and negatives."""
    probs = np.asarray(probs, np.float64)
    k = probs.shape[1]
    classes = [1] if k == 2 else range(k)
    curves = []
    for c in classes:
        yc = np.asarray(y) == c
        if yc.all() or not yc.any():
            continue
        fpr, tpr = roc_curve(yc, probs[:, c])
        curves.append(np.interp(grid, fpr, tpr))
    return np.mean(curves, axis=0) if curves else None


def classification_metrics(y, probs) -> dict[str, float]:
    """ACC, AUC, precision, recall (sensitivity), F1, specificity (see the module docstring)
    plus ``n`` (number of samples). ``y`` int ``[N]``, ``probs`` float ``[N, K]``."""
    y = np.asarray(y, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"expected probs [N, K] with N = len(y) = {len(y)}, got {probs.shape}")
    k = probs.shape[1]
    out: dict[str, float] = {"n": float(len(y))}
    if len(y) == 0:
        return {**out, **{m: float("nan") for m in METRICS}}
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, k)
    out["acc"] = _ratio(np.trace(cm), cm.sum())
    per = []
    for c in ([1] if k == 2 else range(k)):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        tn = cm.sum() - tp - fp - fn
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        auc = binary_auc(y == c, probs[:, c])
        per.append((precision, recall, f1, _ratio(tn, tn + fp), auc))
    per_a = np.array(per, np.float64)
    out["precision"], out["recall"], out["f1"], out["specificity"] = (
        float(v) for v in per_a[:, :4].mean(axis=0))
    aucs = per_a[:, 4][~np.isnan(per_a[:, 4])]
    out["auc"] = float(aucs.mean()) if len(aucs) else float("nan")
    return out


def mean_std(values) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0) over the finite values."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())
