"""Calibrated probabilities: temperature scaling, expected calibration error and the
reliability diagram.

Temperature scaling divides a classifier's logits by one scalar ``T > 0`` before the
softmax: ``p = softmax(z / T)``. ``T`` is fitted per fold after model selection, on that
fold's **validation** patients only (never its test fold), by minimising the mean negative
log-likelihood of their labels: a golden-section search on ``log T`` over
:data:`T_BOUNDS` (the NLL is convex in ``1/T``, hence unimodal in ``log T``). ``T > 1``
softens over-confident scores, ``T < 1`` sharpens under-confident ones; the arg-max, hence
accuracy, never changes, nor does a binary task's AUC (a monotone map of the score).

One logit per example (``activation='sigmoid'``, ``[N, 1]``) is handled as the two logits
``[0, z]``, whose softmax is ``[1 - sigmoid(z), sigmoid(z)]``.

ECE here is the **top-label** expected calibration error: the confidence of an example is
its largest class probability, the examples are put in :data:`N_BINS` equal-width bins of
confidence on [0, 1], and ``ECE = sum_b n_b / N * |accuracy_b - mean confidence_b|``
(a fraction; reports show percent). The same definition for binary and multi-class tasks.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: equal-width confidence bins of the ECE and of the reliability diagram
N_BINS = 15
#: the interval searched for T
T_BOUNDS = (0.05, 20.0)
#: below this many validation examples a fold's T is reported as uncertain: with a few
#: dozen examples, all of them used to select the epoch, T can follow a handful of cases
#: (measured in the README: density, 36 validation examples, T 0.09, test NLL doubled)
FEW_CALIBRATION_EXAMPLES = 100
ECE_TEXT = (f"top-label ECE: confidence = the largest class probability, {N_BINS} "
            "equal-width bins on [0, 1]")


def as_logits(logits: Any, activation: str = "softmax") -> np.ndarray:
    """Logits as float64 ``[N, K]``: ``[N, K]`` softmax logits unchanged, sigmoid logits
    (``[N]`` or ``[N, 1]``) as ``[N, 2]`` = ``[0, z]``."""
    z = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        z = z.reshape(-1, 1)
        return np.concatenate([np.zeros_like(z), z], axis=1)
    if activation != "softmax":
        raise ValueError(f"unknown activation {activation!r} (softmax or sigmoid)")
    if z.ndim != 2:
        raise ValueError(f"softmax logits must be [N, K], got shape {z.shape}")
    return z


def softmax(z: np.ndarray, temperature: Any = 1.0) -> np.ndarray:
    """``softmax(z / temperature)`` over the last axis (float64 ``[N, K]``); ``temperature``
    a scalar or one per example ``[N]``."""
    t = np.asarray(temperature, dtype=np.float64)
    s = np.asarray(z, dtype=np.float64) / (t.reshape(-1, 1) if t.ndim else t)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: Any = 1.0) -> float:
    """Mean negative log-likelihood (nats) of integer ``labels`` ``[N]`` under
    ``softmax(logits / temperature)``; logits ``[N, K]`` (see :func:`as_logits`),
    ``temperature`` a scalar or one per example ``[N]``."""
    t = np.asarray(temperature, dtype=np.float64)
    s = np.asarray(logits, dtype=np.float64) / (t.reshape(-1, 1) if t.ndim else t)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return math.nan
    m = s.max(axis=1)
    lse = m + np.log(np.exp(s - m[:, None]).sum(axis=1))
    return float(np.mean(lse - s[np.arange(len(y)), y]))


def fit_temperature(logits: Any, labels: Any, activation: str = "softmax",
                    bounds: tuple[float, float] = T_BOUNDS, tol: float = 1e-5) -> float:
    """The ``T`` in ``bounds`` minimising :func:`nll` of ``labels`` (int ``[N]``, values
    ``0..K-1``) under ``softmax(logits / T)`` (golden-section search on ``log T`` to
    ``tol``). 1.0 when there is nothing to fit (no example, non-finite logits)."""
    z = as_logits(logits, activation)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(z):
        raise ValueError(f"{len(z)} logits but {len(y)} labels")
    if len(y) == 0 or not np.isfinite(z).all():
        return 1.0
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels outside 0..{z.shape[1] - 1}: {sorted(set(y.tolist()))}")
    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(z, y, math.exp(c)), nll(z, y, math.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(z, y, math.exp(d))
    return float(math.exp((a + b) / 2.0))


def reliability_bins(probs: Any, labels: Any, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Top-label reliability per equal-width confidence bin: ``count`` int ``[n_bins]``,
    ``confidence`` (mean largest probability) and ``accuracy`` (fraction whose arg-max is the
    label) float ``[n_bins]`` (NaN in empty bins), ``edges`` ``[n_bins + 1]``. Bin ``b`` holds
    confidences in ``(edges[b], edges[b + 1]]`` (the first bin includes 0)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == y).astype(np.float64) if len(p) else np.zeros(0)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"count": count, "confidence": mean_conf, "accuracy": acc, "edges": edges}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """Top-label ECE (a fraction; see the module docstring) of probabilities ``[N, K]``
    and integer labels ``[N]``; NaN without examples."""
    b = reliability_bins(probs, labels, n_bins)
    n = int(b["count"].sum())
    if n == 0:
        return math.nan
    keep = b["count"] > 0
    gap = np.abs(b["accuracy"][keep] - b["confidence"][keep])
    return float(np.sum(b["count"][keep] / n * gap))


def calibration_metrics(logits: Any, labels: Any, temperature: float,
                        activation: str = "softmax") -> dict[str, float]:
    """ECE and NLL of ``labels`` before (``T = 1``) and after (``T = temperature``):
    ``ece_before``, ``ece_after``, ``nll_before``, ``nll_after``."""
    z = as_logits(logits, activation)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    return {"ece_before": expected_calibration_error(softmax(z), y),
            "ece_after": expected_calibration_error(softmax(z, temperature), y),
            "nll_before": nll(z, y), "nll_after": nll(z, y, temperature)}


def plot_reliability(probs_before: Any, probs_after: Any, labels: Any, path: Path,
                     title: str = "Reliability", n_bins: int = N_BINS) -> Path:
    """Reliability diagram PNG: accuracy against mean confidence per bin, before and after
    temperature scaling, with the diagonal of perfect calibration and each curve's ECE
    in the legend; below it the number of examples per bin."""
    from .figures import pyplot

    plt = pyplot()
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 6), dpi=110, sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    centres = (np.arange(n_bins) + 0.5) / n_bins
    width = 1.0 / n_bins
    for name, probs, colour, shift in (("before (T = 1)", probs_before, "tab:red", -0.2),
                                       ("after (temperature scaling)", probs_after,
                                        "tab:blue", 0.2)):
        b = reliability_bins(probs, labels, n_bins)
        ece = expected_calibration_error(probs, labels, n_bins)
        keep = b["count"] > 0
        ax.plot(b["confidence"][keep], b["accuracy"][keep], "o-", color=colour,
                label=f"{name}: ECE {100 * ece:.2f} %")
        hx.bar(centres + shift * width, b["count"], width=0.4 * width, color=colour)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="accuracy in bin",
           title="\n".join(textwrap.wrap(title, 48)))  # the figure is 5 inches wide
    ax.legend(loc="upper left", fontsize=7)
    hx.set(xlabel=f"confidence (largest class probability, {n_bins} bins)",
           ylabel="examples")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ report

def run_calibration(run: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration of a run (:func:`mammotrain.report.load_run`) on its pooled test
    predictions: per fold ``temperature`` and ECE before/after, pooled ECE and NLL
    before/after; None when its predictions hold no ``logits`` (detection, older runs)."""
    rows = [r for r in run["predictions"] if r.get("logits") is not None and r["label"] >= 0]
    folds = [f for f in run["folds"] if f.get("temperature") is not None]
    if not rows or not folds:
        return None
    temps = {int(f["fold"]): float(f["temperature"]) for f in folds}
    rows = [r for r in rows if int(r["fold"]) in temps]
    y = np.array([r["label"] for r in rows], np.int64)
    z = np.array([r["logits"] for r in rows], np.float64)
    t = np.array([temps[int(r["fold"])] for r in rows], np.float64)
    before, after = softmax(z), softmax(z, t)
    per_fold = [{"fold": int(f["fold"]), "temperature": float(f["temperature"]),
                 "calibration_n": f.get("calibration_n"),
                 "ece_before": f.get("ece_before"), "ece_after": f.get("ece_after")}
                for f in folds]
    return {"ece": ECE_TEXT, "fitted_on": "validation patients of each fold",
            "n": int(len(y)), "per_fold": per_fold,
            "ece_before": expected_calibration_error(before, y),
            "ece_after": expected_calibration_error(after, y),
            "nll_before": nll(z, y), "nll_after": nll(z, y, t),
            "_probs": (before, after, y)}


def calibration_section(cal: dict[str, Any] | None, out: Path, title: str) -> list[str]:
    """summary.md's calibration paragraph, table and ``reliability.png`` (written here);
    [] without calibration. Pops the arrays ``cal`` carries for the figure."""
    if cal is None:
        return []
    before, after, y = cal.pop("_probs")
    plot_reliability(before, after, y, out / "reliability.png",
                     title=f"{title}: pooled test folds")
    pct = lambda v: "undefined" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"
    rows = [f"| {f['fold']} | {f['calibration_n']} | {f['temperature']:.3f} | "
            f"{pct(f['ece_before'])} | {pct(f['ece_after'])} |" for f in cal["per_fold"]]
    return ["## Calibration (temperature scaling)", "",
            "One temperature T per fold, fitted after model selection on that fold's "
            "validation patients only (minimum NLL of softmax(logits / T)); the test "
            "scores (predictions.parquet, metrics) are softmax(logits / T). "
            f"ECE: {ECE_TEXT}; %.", "",
            f"Pooled test predictions ({cal['n']}): ECE {pct(cal['ece_before'])} before, "
            f"{pct(cal['ece_after'])} after; NLL {cal['nll_before']:.4f} before, "
            f"{cal['nll_after']:.4f} after.", "",
            "| fold | validation examples | T | test ECE before | test ECE after |",
            "|---|---|---|---|---|", *rows, "", *_few_note(cal),
            "![reliability before vs after temperature scaling](reliability.png)", ""]


def _few_note(cal: dict[str, Any]) -> list[str]:
    """summary.md's warning for folds calibrated on few validation examples."""
    few = [str(f["fold"]) for f in cal["per_fold"]
           if (f.get("calibration_n") or 0) < FEW_CALIBRATION_EXAMPLES]
    if not few:
        return []
    return [f"**Warning:** fold {', '.join(few)} fitted T on fewer than "
            f"{FEW_CALIBRATION_EXAMPLES} validation examples, the same ones that selected "
            "the epoch: T is uncertain and may not carry to the test fold (compare the test "
            "ECE and NLL before and after).", ""]


def fold_calibration(val_logits: np.ndarray, val_labels: np.ndarray,
                     val_uids: Sequence[str]) -> dict[str, Any]:
    """Fit ``T`` on a fold's validation predictions (labelled ones): ``temperature``,
    ``n``, ``uids`` (the examples used) and their NLL before/after."""
    y = np.asarray(val_labels, dtype=np.int64)
    keep = y >= 0
    z = np.asarray(val_logits, dtype=np.float64)[keep]
    temp = fit_temperature(z, y[keep]) if keep.any() else 1.0
    return {"temperature": temp, "n": int(keep.sum()),
            "uids": [u for u, k in zip(val_uids, keep) if k],
            "val_nll_before": nll(z, y[keep]) if keep.any() else math.nan,
            "val_nll_after": nll(z, y[keep], temp) if keep.any() else math.nan}
