"""Classification metrics and their uncertainty in plain NumPy (cross-checked against
scikit-learn and hand-computed cases in the tests).

Conventions: ``y`` int ``[N]`` class indices; ``probs`` float ``[N, K]`` class
probabilities (rows sum to 1); the prediction is the arg-max class (for K = 2 that is
``p1 >= 0.5`` up to ties). Binary metrics treat class 1 as positive.

Undefined values are NaN, never a convention dressed as a number: AUC with one class
present; recall (sensitivity) and F1 without positives; specificity without negatives;
precision with neither positives nor positive predictions (a missed class present in ``y``
has precision 0, as scikit-learn's ``zero_division=0``). For K > 2, AUC, precision, recall,
F1 and specificity are unweighted means of the one-vs-rest values over the classes present
in ``y`` (macro; an absent class is left out, not counted as 0 - :func:`undefined_reason`
says which classes are absent).

Uncertainty: :func:`bootstrap_ci` (patient-level percentile bootstrap), :func:`paired_bootstrap`
(two models on the same patients) and :func:`delong_test` (paired DeLong test of two AUCs).
:func:`probabilistic_f1` is the RSNA Screening Mammography challenge's pF1.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """int64 ``[K, K]``: row = true class, column = predicted class."""
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def midranks(x: np.ndarray) -> np.ndarray:
    """float64 ``[N]``: 1-based ranks of ``x`` with ties given their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0 + 1.0, ends - starts)
    return ranks


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``y == 1`` (Mann-Whitney U, ties count one half); NaN when
    only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = midranks(score)[y].sum() - n_pos * (n_pos + 1) / 2.0
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


def _nan_ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _nanmean(values) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    return float(v.mean()) if len(v) else float("nan")


def classification_metrics(y, probs) -> dict[str, float]:
    """ACC, AUC, precision, recall (sensitivity), F1, specificity (see the module docstring
    for undefined values and the macro average) plus ``n`` (number of samples). ``y`` int
    ``[N]``, ``probs`` float ``[N, K]``."""
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
    present = cm.sum(axis=1) > 0
    per = []
    for c in ([1] if k == 2 else [c for c in range(k) if present[c]]):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        tn = cm.sum() - tp - fp - fn
        pos = tp + fn
        precision = _ratio(tp, tp + fp) if (tp + fp or pos) else float("nan")
        recall = _nan_ratio(tp, pos)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn) if pos else float("nan")
        per.append((precision, recall, f1, _nan_ratio(tn, tn + fp),
                    binary_auc(y == c, probs[:, c])))
    for i, name in enumerate(("precision", "recall", "f1", "specificity", "auc")):
        out[name] = _nanmean([p[i] for p in per])
    return out


def undefined_reason(y, num_classes: int, classes: Sequence[str] | None = None) -> str | None:
    """Why AUC (and per-class ratios) of labels ``y`` are undefined or partial: 'no
    examples', 'one class only (12 benign)', 'class D absent (macro over 3 of 4)'; None when
    every class is present."""
    y = np.asarray(y, np.int64)
    names = list(classes) if classes is not None else [str(c) for c in range(num_classes)]
    if len(y) == 0:
        return "no examples"
    counts = np.bincount(y, minlength=num_classes)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        c = int(present[0])
        return f"one class only ({counts[c]} {names[c]})"
    absent = [names[c] for c in range(num_classes) if counts[c] == 0]
    if absent:
        return (f"class {', '.join(absent)} absent (macro over {len(present)} of "
                f"{num_classes})")
    return None


def sensitivity_at_specificity(y, score, specificity: float = 0.9) -> float:
    """Highest sensitivity of ``score`` (binary, class 1 positive) at a threshold whose
    specificity is at least ``specificity`` (an operating point of the empirical ROC curve,
    no interpolation); NaN with one class only."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr = roc_curve(y, score)
    ok = fpr <= (1.0 - specificity) + 1e-12
    return float(tpr[ok].max())


def probabilistic_f1(y, score, beta: float = 1.0) -> float:
    """The RSNA Screening Mammography Breast Cancer Detection challenge's probabilistic F-beta:
    probabilistic TP = sum of the (clipped to [0, 1]) scores of positives, FP = sum over
    negatives; precision = TP / (TP + FP), recall = TP / positives; 0 when either is 0, NaN
    without positives. ``y`` binary ``[N]``, ``score`` P(positive) ``[N]``; the challenge
    scores one value per breast (see :func:`per_breast`)."""
    y = np.asarray(y).astype(bool)
    s = np.clip(np.asarray(score, np.float64), 0.0, 1.0)
    if not y.any():
        return float("nan")
    tp, fp = float(s[y].sum()), float(s[~y].sum())
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / int(y.sum())
    if precision <= 0 or recall <= 0:
        return 0.0
    b2 = beta * beta
    return float((1 + b2) * precision * recall / (b2 * precision + recall))


def per_breast(keys: Sequence[str], y, score) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one breast (same ``key``: one study's breast) -> one row: label = the highest,
    score = the mean of its views' scores. Returns (``y [B]``, ``score [B]``) sorted by key."""
    keys = np.asarray(keys)
    uniq, inv = np.unique(keys, return_inverse=True)
    yb = np.zeros(len(uniq), np.int64)
    np.maximum.at(yb, inv, np.asarray(y, np.int64))
    sb = np.bincount(inv, weights=np.asarray(score, np.float64), minlength=len(uniq))
    return yb, sb / np.bincount(inv, minlength=len(uniq))


def binary_operating_metrics(y, probs) -> dict[str, float]:
    """The values given a confidence interval in reports: AUC, ACC and F1 (the paper's
    columns; AUC and F1 macro for K > 2), sensitivity (recall) and specificity at the
    arg-max decision, and for binary tasks the sensitivity at 90 % specificity
    (``sens_at_90spec``)."""
    m = classification_metrics(y, probs)
    out = {k: m[k] for k in ("auc", "acc", "f1", "recall", "specificity")}
    probs = np.asarray(probs, np.float64)
    if probs.shape[1] == 2:
        out["sens_at_90spec"] = sensitivity_at_specificity(y, probs[:, 1], 0.9)
    return out


def _group_codes(groups) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if len(codes) else 0


def _resample(codes: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one patient-level bootstrap sample: ``n_groups`` patients drawn with
    replacement, each bringing all its rows (as often as it was drawn)."""
    mult = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
    return np.repeat(np.arange(len(codes)), mult[codes])


def _percentile_ci(values: list[float], n_boot: int, alpha: float) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if len(v) < 0.5 * n_boot:  # mostly undefined resamples: no honest interval
        return float("nan"), float("nan")
    return float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))


def bootstrap_ci(y, probs, groups, fn: Callable[[np.ndarray, np.ndarray], dict[str, float]]
                 = binary_operating_metrics, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile ``1 - alpha`` confidence intervals of every value of ``fn(y, probs)`` by a
    patient-level bootstrap: ``groups [N]`` (patient ids) are resampled with replacement,
    each with all its rows, so the correlation of a patient's images is kept. Resamples
    where a value is undefined (one class drawn) are skipped for it; when more than half
    are, its interval is (NaN, NaN). Seeded: the same inputs give the same intervals."""
    y = np.asarray(y, np.int64)
    probs = np.asarray(probs, np.float64)
    codes, g = _group_codes(groups)
    if len(y) != len(codes) or len(probs) != len(y):
        raise ValueError(f"y, probs and groups must have one entry per row: {len(y)}, "
                         f"{len(probs)}, {len(codes)}")
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot if g else 0):
        idx = _resample(codes, g, rng)
        for k, v in fn(y[idx], probs[idx]).items():
            samples.setdefault(k, []).append(v)
    keys = samples or (fn(y, probs) if len(y) else {})
    return {k: _percentile_ci(samples.get(k, []), n_boot, alpha) for k in keys}


def paired_bootstrap(y, probs_a, probs_b, groups, metric: str = "auc", n_boot: int = 2000,
                     seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """Two models' predictions of the same rows (``probs_a``, ``probs_b`` ``[N, K]``): the
    difference ``metric(b) - metric(a)`` (a :func:`classification_metrics` key), its
    patient-level percentile interval, and the two-sided bootstrap p-value of no difference
    (``2 * min(P(d <= 0), P(d >= 0))`` over resamples, at most 1). Both models see the same
    resampled patients in each replicate (paired)."""
    y = np.asarray(y, np.int64)
    pa, pb = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    codes, g = _group_codes(groups)
    a0 = classification_metrics(y, pa)[metric]
    b0 = classification_metrics(y, pb)[metric]
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n_boot if g else 0):
        idx = _resample(codes, g, rng)
        d.append(classification_metrics(y[idx], pb[idx])[metric]
                 - classification_metrics(y[idx], pa[idx])[metric])
    return paired_result(a0, b0, d, n_boot, alpha, n=int(len(y)), groups=g)


def paired_result(a: float, b: float, deltas: Sequence[float], n_boot: int, alpha: float,
                  **extra) -> dict[str, float]:
    """The summary of a paired bootstrap: the values ``a`` and ``b``, ``delta = b - a``, the
    percentile interval of the resampled ``deltas`` and the two-sided p-value of no
    difference (``2 * min(P(d <= 0), P(d >= 0))``, at most 1; NaN when more than half the
    resamples are undefined), plus ``extra`` and ``n_boot``."""
    dv = np.asarray([x for x in deltas if math.isfinite(x)], np.float64)
    lo, hi = _percentile_ci(list(deltas), n_boot, alpha)
    p = (float(min(1.0, 2 * min((dv <= 0).mean(), (dv >= 0).mean())))
         if len(dv) >= 0.5 * n_boot else float("nan"))
    return {"a": a, "b": b, "delta": b - a, "ci_low": lo, "ci_high": hi, "p": p, **extra,
            "n_boot": n_boot}


def delong_test(y, score_a, score_b) -> dict[str, float]:
    """DeLong's test of two correlated ROC AUCs (the same rows scored by two models).

    Structural components from mid-ranks (DeLong, DeLong & Clarke-Pearson 1988; Sun & Xu
    2014): ``V10[i]`` per positive, ``V01[j]`` per negative; ``var(AUC_b - AUC_a) =
    c' S10 c / m + c' S01 c / n`` with ``c = (-1, 1)``. Returns auc_a, auc_b, delta, se, z and
    the two-sided normal p-value (1 when the difference has zero variance, NaN with one
    class). Rows are treated as independent: prefer :func:`paired_bootstrap` when patients
    contribute several rows."""
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    nan = float("nan")
    if m < 2 or n < 2:
        return {"auc_a": nan, "auc_b": nan, "delta": nan, "se": nan, "z": nan, "p": nan}
    v10, v01 = [], []
    for s in (np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)):
        x, yy = s[y], s[~y]
        tz = midranks(np.r_[x, yy])
        v10.append((tz[:m] - midranks(x)) / n)
        v01.append(1.0 - (tz[m:] - midranks(yy)) / m)
    aucs = [float(v.mean()) for v in v10]
    c = np.array([-1.0, 1.0])
    var = float(c @ np.cov(np.array(v10)) @ c / m + c @ np.cov(np.array(v01)) @ c / n)
    delta = aucs[1] - aucs[0]
    if var <= 1e-18:
        return {"auc_a": aucs[0], "auc_b": aucs[1], "delta": delta, "se": 0.0, "z": 0.0,
                "p": 1.0 if abs(delta) < 1e-12 else 0.0}
    z = delta / math.sqrt(var)
    return {"auc_a": aucs[0], "auc_b": aucs[1], "delta": delta, "se": math.sqrt(var),
            "z": z, "p": math.erfc(abs(z) / math.sqrt(2.0))}


def mean_std(values) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0) over the finite values."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())
