"""Reports from run folders: per-fold and summary tables (LUMINA format), ROC curves,
energy-wise and per-vendor AUC, Grad-CAM figures, the raw-vs-harmonised ablation and the
combined ``train-all`` report.

A run folder is what :func:`mammotrain.train.run_cv` writes (``config.json`` and
``foldK/{metrics.json, predictions.parquet, gradcam.png}``). Everything here reads those
files only, so a report can be rebuilt without retraining (``mammotrain report OUT``).
Values in tables are percentages. Per fold, an undefined value (AUC of a fold with one class
only, ...) is shown as undefined with the reason, and a fold mean is only given when every
fold is defined (``mean ± std``, population std) - never a mean over the defined folds that
hides the others. Beside it: the pooled out-of-fold value (every test fold's predictions
together) with a 95 % confidence interval from a patient-level bootstrap, the sensitivity at
90 % specificity, and for diagnosis RSNA's probabilistic F1 per breast. The ablation adds a
paired test (patient-level paired bootstrap; DeLong for binary tasks) over the examples both
runs predicted. JSON outputs are strict (``null`` for undefined values).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .detection_metrics import DETECTION_METRICS
from .jsonio import dumps as strict_dumps
from .jsonio import json_safe
from .metrics import (METRICS, binary_operating_metrics, bootstrap_ci, classification_metrics,
                      delong_test, macro_roc, mean_std, paired_bootstrap, per_breast,
                      probabilistic_f1, undefined_reason)
from .splits import split_text
from .tasks import get_task

GRID = np.linspace(0.0, 1.0, 201)
#: bootstrap resamples for confidence intervals and for the paired ablation test
N_BOOT, N_BOOT_PAIRED = 1000, 2000


# ------------------------------------------------------------------------------ loading

def load_run(out: str | Path) -> dict[str, Any]:
    """{'out', 'config', 'plan', 'folds': [metrics dicts], 'predictions': [rows]}; folds
    without ``metrics.json`` + ``predictions.parquet`` are skipped."""
    import pyarrow.parquet as pq

    out = Path(out)
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: not a mammotrain run folder (no config.json)")
    doc = json.loads(cfg_path.read_text())
    folds, preds = [], []
    for d in sorted(out.glob("fold*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit()
                    else 0):
        m, p = d / "metrics.json", d / "predictions.parquet"
        if m.exists() and p.exists():
            folds.append(json.loads(m.read_text()))
            preds.extend(pq.read_table(p).to_pylist())
    return {"out": out, "config": doc["config"], "plan": doc.get("plan", {}), "folds": folds,
            "predictions": preds, "versions": doc.get("versions", {})}


def _arrays(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([r["label"] for r in rows], np.int64)
    p = np.array([r["scores"] for r in rows], np.float64)
    return y, p


@dataclass(frozen=True)
class FoldStat:
    """One metric over test folds. ``mean``/``std`` (population) only when every fold is
    defined (else NaN); ``undefined``: the folds whose value is undefined."""

    mean: float
    std: float
    defined: int
    total: int
    undefined: tuple[int, ...] = ()

    def text(self) -> str:
        """'78.12 ± 3.40' (percent), or why there is no mean."""
        if self.total == 0:
            return "n/a"
        if self.undefined:
            return (f"undefined in {len(self.undefined)} of {self.total} folds "
                    f"(fold {', '.join(map(str, self.undefined))})")
        if self.total == 1:
            return f"{100 * self.mean:.2f} (1 fold: no spread)"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "defined_folds": self.defined,
                "folds": self.total, "undefined_folds": list(self.undefined)}


def fold_stat(folds: Sequence[dict[str, Any]], metric: str) -> FoldStat:
    """:class:`FoldStat` of ``metric`` over fold metrics dicts (``fold`` and the value; a
    missing, None or NaN value is undefined)."""
    vals, undefined = [], []
    for f in folds:
        v = f.get(metric)
        if v is None or not math.isfinite(v):
            undefined.append(int(f.get("fold", len(vals) + len(undefined))))
        else:
            vals.append(float(v))
    if undefined or not vals:
        return FoldStat(float("nan"), float("nan"), len(vals), len(folds), tuple(undefined))
    return FoldStat(*mean_std(vals), len(vals), len(folds))


def summarize(folds: Sequence[dict[str, Any]]) -> dict[str, FoldStat]:
    """metric -> :class:`FoldStat` over folds (fractions, not percent); detection metrics
    too."""
    return {m: fold_stat(folds, m) for m in METRICS + DETECTION_METRICS}


def fold_reasons(run: dict[str, Any]) -> dict[int, str]:
    """fold -> why its metrics are undefined or partial ('one class only (9 benign)', 'class
    D absent ...'), from its test predictions; folds with every class present are left out."""
    task = get_task(run["config"]["task"])
    out = {}
    for f in sorted({r["fold"] for r in run["predictions"]}):
        y, _ = _arrays([r for r in run["predictions"] if r["fold"] == f])
        reason = undefined_reason(y, task.num_classes, task.classes)
        if reason:
            out[int(f)] = reason
    return out


def pooled_metrics(run: dict[str, Any], n_boot: int = N_BOOT, seed: int = 0
                   ) -> dict[str, Any]:
    """Every test fold's predictions together (out-of-fold): n, patients, why undefined (if
    so), and per value {'value', 'ci_low', 'ci_high'} (95 % patient-level bootstrap, ``n_boot``
    resamples): AUC, sensitivity (recall), specificity, binary tasks sensitivity at 90 %
    specificity; diagnosis tasks pF1 (RSNA's probabilistic F1, one row per breast: the
    mean score of its views, no interval). Fractions, not percent."""
    task = get_task(run["config"]["task"])
    rows = run["predictions"]
    y, p = _arrays(rows)
    if len(y) == 0:
        return {"n": 0, "patients": 0, "reason": "no predictions", "values": {}}
    groups = [r["patient"] for r in rows]
    point = binary_operating_metrics(y, p)
    ci = bootstrap_ci(y, p, groups, binary_operating_metrics, n_boot=n_boot, seed=seed)
    values = {k: {"value": v, "ci_low": ci.get(k, (math.nan,) * 2)[0],
                  "ci_high": ci.get(k, (math.nan,) * 2)[1]} for k, v in point.items()}
    if task.binary and task.label_rule == "diagnosis":
        yb, sb = per_breast([r["key"] for r in rows], y, p[:, 1])
        values["pf1"] = {"value": probabilistic_f1(yb, sb), "ci_low": math.nan,
                         "ci_high": math.nan, "breasts": int(len(yb))}
    return {"n": int(len(y)), "patients": len(set(groups)),
            "reason": undefined_reason(y, task.num_classes, task.classes), "values": values,
            "underpowered": underpowered(y, task.num_classes)}


#: Below these pooled test counts a report says it is under-powered: fewer test examples
#: overall, or fewer of the rarest class, than this.
MIN_POOLED_TEST = 30
MIN_CLASS_TEST = 10


def underpowered(y: np.ndarray, num_classes: int) -> str:
    """Why the pooled test set is too small to support its figures ('' when it is not):
    fewer than ``MIN_POOLED_TEST`` examples or fewer than ``MIN_CLASS_TEST`` of a class."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)
    if len(y) < MIN_POOLED_TEST or counts.min() < MIN_CLASS_TEST:
        return (f"only {len(y)} test examples (per class {counts.tolist()}); below "
                f"{MIN_POOLED_TEST} examples or {MIN_CLASS_TEST} of a class no figure here, "
                "a perfect one included, is evidence of anything")
    return ""


POOLED_LABELS = {"auc": "AUC", "recall": "Sensitivity", "specificity": "Specificity",
                 "sens_at_90spec": "Sensitivity at 90 % specificity",
                 "pf1": "pF1 (RSNA, per breast)"}


def ci_text(v: dict[str, float]) -> str:
    """'81.20 (95 % CI 74.10-87.00)' in percent; 'undefined' for NaN."""
    if v is None or v.get("value") is None or not math.isfinite(v["value"]):
        return "undefined"
    if not (math.isfinite(v.get("ci_low", math.nan)) and math.isfinite(v.get("ci_high", math.nan))):
        return f"{100 * v['value']:.2f}"
    return f"{100 * v['value']:.2f} (95 % CI {100 * v['ci_low']:.2f}-{100 * v['ci_high']:.2f})"


def subgroup_auc(rows: Sequence[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """Pooled predictions grouped by ``column`` (energy, manufacturer): n, class counts and
    the task's AUC (macro for multi-class) per group; NaN where one class only."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(str(r.get(column) or "unknown"), []).append(r)
    out = []
    for g in sorted(groups):
        y, p = _arrays(groups[g])
        m = classification_metrics(y, p)
        counts = {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))}
        out.append({column: g, "n": len(y), "classes": counts, "auc": m["auc"], "acc": m["acc"]})
    return out


def pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def run_title(cfg: dict[str, Any]) -> str:
    mode = "" if cfg["views"] == 1 else (", shared" if cfg.get("shared", True) else ", independent")
    return (f"{cfg['task']} {cfg['views']}-view, {cfg['backbone']}{mode}, {_size_text(cfg['size'])}")


def _size_text(size: Any) -> str:
    """``224²`` (square) or ``1024x512`` (rows x cols)."""
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] != size[1]:
        return f"{size[0]}x{size[1]}"
    return f"{size[0] if isinstance(size, (list, tuple)) else size}²"


# ------------------------------------------------------------------------------ figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fold_curves(run: dict[str, Any]) -> list[tuple[int, np.ndarray]]:
    """(fold, mean-TPR on :data:`GRID`) per fold with both classes present."""
    curves = []
    for f in sorted({r["fold"] for r in run["predictions"]}):
        y, p = _arrays([r for r in run["predictions"] if r["fold"] == f])
        tpr = macro_roc(y, p, GRID)
        if tpr is not None:
            curves.append((f, tpr))
    return curves


def plot_roc(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, per_fold: bool = True,
             title: str | None = None) -> None:
    """ROC curves: each fold (thin, if ``per_fold``) and the mean ± std band per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, run) in enumerate(runs):
        c = colours[i % len(colours)]
        curves = fold_curves(run)
        if not curves:
            continue
        if per_fold:
            for f, tpr in curves:
                ax.plot(GRID, tpr, color=c, alpha=0.3, lw=0.8)
        tprs = np.array([t for _, t in curves])
        mean, std = tprs.mean(0), tprs.std(0)
        mean[0] = 0.0
        y, p = _arrays(run["predictions"])
        pooled = classification_metrics(y, p)["auc"]
        ax.plot(GRID, mean, color=c, lw=2,
                label=f"{name} mean of {len(curves)} folds (fold AUC "
                      f"{fold_stat(run['folds'], 'auc').text()}; pooled {pct(pooled)})")
        ax.fill_between(GRID, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=c,
                        alpha=0.12)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", title=title or "ROC")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_gradcam(model, cfg, examples, path: Path, device) -> None:
    """Grid figure: one row per example, per view the input and the Grad-CAM overlay
    (target: the predicted class), lesion boxes (from the shard JSON) in green."""
    from .data import EpochLoader, ShardStream
    from .gradcam import gradcam

    if not examples:
        return
    task = get_task(cfg.task)
    stream = ShardStream(cfg.shards, examples, cfg.preprocess(), train=False)
    batch = next(iter(EpochLoader(stream, len(examples), workers=0, drop_last=False)))
    cams, probs = gradcam(model, batch["image"].to(device))
    imgs = batch["image"][:, :, 0].numpy()  # [B, V, S, S] in [0, 1]
    plt = _plt()
    from matplotlib.patches import Rectangle

    b, v = cams.shape[:2]
    fig, axes = plt.subplots(b, 2 * v, figsize=(2.2 * 2 * v, 2.3 * b), dpi=100, squeeze=False)
    views = examples[0].views
    for i in range(b):
        lab = int(batch["label"][i])
        pred = int(np.argmax(probs[i]))
        for j in range(v):
            img = imgs[i, j]
            img = (img - img.min()) / max(img.max() - img.min(), 1e-6)
            for k, ax in enumerate(axes[i, 2 * j:2 * j + 2]):
                ax.imshow(img, cmap="gray")
                if k == 1:
                    ax.imshow(cams[i, j], cmap="jet", alpha=0.4, vmin=0, vmax=1)
                for bx in batch["boxes"][i][j]:
                    ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1],
                                           fill=False, ec="lime", lw=1))
                ax.set_axis_off()
            axes[i, 2 * j].set_title(f"{batch['key'][i][:8]} {views[j] if len(views) > j else ''}"
                                     f" y={task.classes[lab]}", fontsize=6)
            axes[i, 2 * j + 1].set_title(f"Grad-CAM pred={task.classes[pred]} "
                                         f"p={probs[i, pred]:.2f}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_detections(cfg, examples, rows: dict[str, dict[str, Any]], path: Path,
                    max_boxes: int = 3, batch: dict[str, Any] | None = None) -> None:
    """Grid figure of test images at the model input: true boxes (green) and the
    ``max_boxes`` highest-objectness predicted boxes (red, with their score); the title
    gives the label and the malignancy probability. ``rows``: uid -> prediction row.
    ``batch``: the images as a loader batch (default: read ``examples`` from the shards)."""
    from matplotlib.patches import Rectangle

    from .data import EpochLoader, ShardStream

    if not examples:
        return
    if batch is None:
        stream = ShardStream(cfg.shards, examples, cfg.preprocess(), train=False)
        batch = next(iter(EpochLoader(stream, len(examples), workers=0, drop_last=False)))
    imgs = batch["image"][:, 0, 0].numpy()
    plt = _plt()
    n = len(imgs)
    cols = min(n, 4)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.8 * nrows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, uid in enumerate(batch["uid"]):
        ax = axes.flat[i]
        r = rows[uid]
        img = imgs[i]
        ax.imshow((img - img.min()) / max(img.max() - img.min(), 1e-6), cmap="gray")
        for bx in batch["boxes"][i][0]:
            ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1], fill=False,
                                   ec="lime", lw=1.2))
        for bx, sc in list(zip(r.get("boxes") or [], r.get("box_scores") or []))[:max_boxes]:
            ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1], fill=False,
                                   ec="red", lw=1.0, ls="--"))
            ax.text(bx[0], max(bx[1] - 2, 0), f"{sc:.2f}", color="red", fontsize=5)
        ax.set_title(f"{r['key'][:8]} {r['view']} y={r['label']} p={r['score']:.2f}",
                     fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------- tables

def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_row(run: dict[str, Any], pooled: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the paper's table: configuration, ``mean ± std`` over folds per metric
    (or where it is undefined) and the pooled out-of-fold AUC with its 95 % CI."""
    task = get_task(run["config"]["task"])
    s = summarize(run["folds"])
    pooled = pooled if pooled is not None else pooled_metrics(run)
    row = {"run": run_title(run["config"]), "folds": len(run["folds"])}
    for m in task.metrics:
        row[task.metric_label(m)] = s[m].text()
    row[f"pooled {task.metric_label('auc')}"] = ci_text(pooled["values"].get("auc"))
    return row


def selection_notes(run: dict[str, Any]) -> tuple[list[str], list[int]]:
    """(distinct selection texts of the folds, folds without validation patients)."""
    texts, no_val = [], []
    for f in run["folds"]:
        t = f.get("selection") or "selected on validation (run predates the record)"
        if t not in texts:
            texts.append(t)
        if f.get("n_val") == 0 or str(t).startswith("last epoch: no validation"):
            no_val.append(int(f["fold"]))
    return texts, no_val


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the screen from :func:`write_run_report`'s summary: the fold mean (or
    where it is undefined) and the pooled out-of-fold AUC with its interval."""
    task = get_task(summary["config"]["task"])
    auc = summary["summary"].get("auc") or {}
    name = task.metric_label("auc")
    if auc.get("undefined_folds"):
        folds = f"undefined in {len(auc['undefined_folds'])} of {auc['folds']} folds " \
                f"(fold {', '.join(map(str, auc['undefined_folds']))})"
    elif auc.get("mean") is not None and auc.get("folds") == 1:
        where = ("the official test part (--split official)"
                 if summary.get("split") == "official" else "1 fold (no spread)")
        folds = f"{100 * auc['mean']:.2f} on {where}"
    elif auc.get("mean") is not None:
        folds = f"{100 * auc['mean']:.2f} ± {100 * auc['std']:.2f} over {auc['folds']} folds"
    else:
        folds = "n/a"
    pooled = summary["pooled"]["values"].get("auc")
    pooled = {k: (math.nan if v is None else v) for k, v in (pooled or {}).items()}
    line = f"{name}: {folds}; pooled out-of-fold {ci_text(pooled)}"
    if summary.get("no_validation_folds"):
        line += (f"; warning: fold {', '.join(map(str, summary['no_validation_folds']))} "
                 "had no validation patients (last epoch evaluated)")
    if summary["pooled"].get("underpowered"):
        line += f"; warning: under-powered: {summary['pooled']['underpowered']}"
    return line


def _cell(v: float | None) -> Any:
    return round(100 * v, 2) if v is not None and math.isfinite(v) else "undefined"


def _fold_groups(plan: dict) -> dict[int, str]:
    """Test fold -> its group (vendor, energy) of a run split by group; {} otherwise."""
    return {int(k): v for k, v in (plan.get("fold_names") or {}).items()}


def _listed(names: dict[int, str]) -> str:
    """``'fold 0 = A, fold 1 = B'``."""
    return ", ".join(f"fold {k} = {v}" for k, v in sorted(names.items()))


def _split_note(plan: dict) -> str:
    """``'; leave one vendor out (fold 0 = A, ...)'`` for a run split by group,
    ``'; official split: ...'`` for ``--split official``, else ''."""
    official = split_text(plan)
    if official:
        return f"; {official}"
    names = _fold_groups(plan)
    return f"; leave one {plan.get('split_by')} out ({_listed(names)})" if names else ""


def _split_paragraph(plan: dict) -> list[str]:
    """summary.md's lines on what the test folds were: the official split, one left-out
    group per fold, or none (patient-level k-fold)."""
    names, split_by = _fold_groups(plan), plan.get("split_by") or "fold"
    if split_text(plan):
        return [f"**Official split** (`--split official`): {split_text(plan, False)}; "
                "validation patients come from the train part only; fold "
                f"{', '.join(map(str, names))} = the test part (no patient-level k-fold).", ""]
    if names:
        return [f"**Leave one {split_by} out:** each test fold holds every example of one "
                f"{split_by}; its model was trained and selected on the other "
                f"{split_by} groups' patients only ({_listed(names)}).", ""]
    return []


def write_run_report(out: str | Path) -> dict[str, Any]:
    """metrics_per_fold.csv, summary.{md,csv,json}, subgroup_auc.csv, roc.png for a run."""
    out = Path(out)
    run = load_run(out)
    cfg = run["config"]
    task = get_task(cfg["task"])
    if not run["folds"]:
        raise FileNotFoundError(f"{out}: no finished fold (foldK/metrics.json)")
    s = summarize(run["folds"])
    reasons = fold_reasons(run)
    pooled = pooled_metrics(run, seed=int(cfg.get("seed", 0)))
    texts, no_val = selection_notes(run)
    names = _fold_groups(run["plan"])
    split_by = run["plan"].get("split_by") or "fold"
    group_column = "test split" if split_text(run["plan"]) else f"test {split_by}"
    per_fold = [{"fold": f["fold"],
                 **({group_column: names.get(int(f["fold"]), "")} if names else {}),
                 "n_test": f.get("n_test"), "selected epoch": f.get("selected_epoch"),
                 **{task.metric_label(m): _cell(f.get(m)) for m in task.metrics},
                 "note": reasons.get(int(f["fold"]), "")} for f in run["folds"]]
    _write_csv(out / "metrics_per_fold.csv",
               [{k: ("" if v == "undefined" else v) for k, v in r.items()} for r in per_fold])
    row = summary_row(run, pooled)
    _write_csv(out / "summary.csv", [{**row, **{f"{task.metric_label(m)} mean": s[m].mean
                                                for m in task.metrics},
                                      **{f"{task.metric_label(m)} std": s[m].std
                                         for m in task.metrics}}])
    energy = subgroup_auc(run["predictions"], "energy")
    vendor = subgroup_auc(run["predictions"], "manufacturer")
    _write_csv(out / "subgroup_auc.csv",
               [{"group": "energy", "value": g["energy"], "n": g["n"], "classes": g["classes"],
                 "auc": g["auc"]} for g in energy]
               + [{"group": "manufacturer", "value": g["manufacturer"], "n": g["n"],
                   "classes": g["classes"], "auc": g["auc"]} for g in vendor])
    plot_roc([(cfg["backbone"], run)], out / "roc.png", title=run_title(cfg))
    auc_name = task.metric_label("auc")
    md = [f"# {run_title(cfg)}", "",
          f"Task **{cfg['task']}** ({', '.join(task.classes)}), shards `{cfg['shards']}`, "
          f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']:g} "
          f"({cfg.get('schedule') or 'step'} schedule), seed {cfg['seed']}; "
          f"{len(run['folds'])} test folds. Model selection: {'; '.join(texts)}.", ""]
    md += _split_paragraph(run["plan"])
    if no_val:
        md += [f"**Warning:** fold {', '.join(map(str, no_val))} had no validation patients: "
               "the last epoch was evaluated, not an epoch selected on validation.", ""]
    if run["plan"]:
        p = run["plan"]
        ex = ", ".join(f"{k} {v}" for k, v in sorted(p.get("excluded", {}).items()) if v)
        md += [f"Examples: {p['examples']} {p['unit']}s of {p['candidates']} "
               f"({p['images']} images); excluded: {ex or 'none'}; classes "
               f"{p.get('class_counts')}.", ""]
    undefined_any = sorted({f for m in task.metrics for f in s[m].undefined})
    md += ["## Summary (mean ± std over folds, %)", "",
           _md_table(list(row), [list(row.values())]), ""]
    if undefined_any:
        md += [f"Fold {', '.join(map(str, undefined_any))} has undefined values (see the "
               "per-fold table), so no mean over folds is given for them; the pooled "
               "out-of-fold values below use every test prediction.", ""]
    md += [f"## Pooled out-of-fold ({pooled['n']} {run['plan'].get('unit', 'example')}s of "
           f"{pooled['patients']} patients, every test fold's predictions; 95 % CI: "
           f"patient-level bootstrap, {N_BOOT} resamples; %)", ""]
    if pooled.get("reason"):
        md += [f"Note: {pooled['reason']}.", ""]
    if pooled.get("underpowered"):
        md += [f"**Warning: under-powered:** {pooled['underpowered']}.", ""]
    md += [_md_table(["metric", "value"],
                     [[("" if task.binary or k not in ("auc", "recall", "specificity")
                        else "macro-") + POOLED_LABELS[k], ci_text(v)]
                      for k, v in pooled["values"].items()]), "",
           "## Per fold (%)", "", _md_table(list(per_fold[0]),
                                            [list(r.values()) for r in per_fold]), "",
           f"## {auc_name} by energy (pooled test predictions of all folds)", "",
           _md_table(["energy", "n", "classes", auc_name],
                     [[g["energy"], g["n"], g["classes"], pct(g["auc"])] for g in energy]), "",
           f"## {auc_name} by vendor (pooled)", "",
           _md_table(["manufacturer", "n", "classes", auc_name],
                     [[g["manufacturer"], g["n"], g["classes"], pct(g["auc"])]
                      for g in vendor]), "",
           "## Figures", "", "![ROC curves per fold and mean](roc.png)", ""]
    md += [f"![Grad-CAM fold {f['fold']}](fold{f['fold']}/gradcam.png)" for f in run["folds"]
           if (out / f"fold{f['fold']}" / "gradcam.png").exists()]
    md += [f"![predicted (red) vs true (green) boxes, fold {f['fold']}]"
           f"(fold{f['fold']}/detections.png)" for f in run["folds"]
           if (out / f"fold{f['fold']}" / "detections.png").exists()]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    summary = {"title": run_title(cfg), "config": cfg, "folds": len(run["folds"]),
               "summary": {m: s[m].to_dict() for m in task.metrics},
               "split_by": split_by, "split": run["plan"].get("split") or "kfold",
               "per_fold": [{"fold": f["fold"], "test_group": names.get(int(f["fold"])),
                             "selected_epoch": f.get("selected_epoch"),
                             "selection": f.get("selection"),
                             "undefined_reason": reasons.get(int(f["fold"])),
                             **{m: f.get(m) for m in task.metrics}} for f in run["folds"]],
               "pooled": pooled, "no_validation_folds": no_val,
               "energy_auc": energy, "vendor_auc": vendor}
    summary = json_safe(summary)  # what summary.json holds: null for undefined values
    (out / "summary.json").write_text(strict_dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------------ ablation

def paired_predictions(a: dict[str, Any], b: dict[str, Any]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int]:
    """The test predictions two runs made of the same examples (same uid, same label):
    (y ``[N]``, probs_a ``[N, K]``, probs_b ``[N, K]``, patients, label mismatches)."""
    by_uid = {r["uid"]: r for r in b["predictions"]}
    ys, pa, pb, groups, mismatched = [], [], [], [], 0
    for r in sorted(a["predictions"], key=lambda r: r["uid"]):
        o = by_uid.get(r["uid"])
        if o is None:
            continue
        if o["label"] != r["label"]:
            mismatched += 1
            continue
        ys.append(r["label"])
        pa.append(r["scores"])
        pb.append(o["scores"])
        groups.append(r["patient"])
    k = len(a["predictions"][0]["scores"]) if a["predictions"] else 2
    return (np.asarray(ys, np.int64), np.asarray(pa, np.float64).reshape(-1, k),
            np.asarray(pb, np.float64).reshape(-1, k), groups, mismatched)


def paired_test(raw: dict[str, Any], harmonised: dict[str, Any], n_boot: int = N_BOOT_PAIRED,
                seed: int = 0) -> dict[str, Any]:
    """Raw vs harmonised AUC on the examples both runs predicted: the patient-level paired
    bootstrap (:func:`mammotrain.metrics.paired_bootstrap`) and, for binary tasks, DeLong's
    test (:func:`mammotrain.metrics.delong_test`). Differences are harmonised - raw."""
    y, pa, pb, groups, mismatched = paired_predictions(raw, harmonised)
    out: dict[str, Any] = {"n": int(len(y)), "patients": len(set(groups)),
                           "label_mismatches": mismatched}
    if len(y) == 0:
        return out
    out["bootstrap"] = paired_bootstrap(y, pa, pb, groups, "auc", n_boot=n_boot, seed=seed)
    if pa.shape[1] == 2:
        out["delong"] = delong_test(y, pa[:, 1], pb[:, 1])
    return out


def _p(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "undefined"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _pts(v: float | None, signed: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return "undefined"
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def write_ablation_report(raw: str | Path, harmonized: str | Path, out: str | Path
                          ) -> dict[str, Any]:
    """Raw vs harmonised, same configuration: fold means with deltas (harmonised - raw,
    points), the paired test over the same patients, overlaid mean ROC curves, energy-wise
    AUC of both. Writes ``OUT/ablation.{md,csv,json}`` and ``OUT/ablation_roc.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {"raw": load_run(raw), "harmonised": load_run(harmonized)}
    cfg = runs["harmonised"]["config"]
    task = get_task(cfg["task"])
    for name, r in runs.items():
        if not r["folds"]:
            raise FileNotFoundError(f"{r['out']}: no finished fold for the ablation ({name})")
    if Path(runs["raw"]["out"]).resolve() == Path(runs["harmonised"]["out"]).resolve():
        raise ValueError(f"{raw}: the raw and harmonised runs are the same folder")
    s = {k: summarize(r["folds"]) for k, r in runs.items()}
    rows = []
    for m in task.metrics:
        d = s["harmonised"][m].mean - s["raw"][m].mean
        rows.append({"metric": task.metric_label(m), "raw": s["raw"][m].text(),
                     "harmonised": s["harmonised"][m].text(),
                     "delta (points)": "n/a" if not math.isfinite(d) else f"{100 * d:+.2f}"})
    test = paired_test(runs["raw"], runs["harmonised"], seed=int(cfg.get("seed", 0)))
    auc_name = task.metric_label("auc")
    t_rows = []
    if "bootstrap" in test:
        b = test["bootstrap"]
        t_rows.append([f"paired bootstrap over patients ({b['n_boot']} resamples)",
                       _pts(b["a"], False), _pts(b["b"], False), _pts(b["delta"]),
                       f"{_pts(b['ci_low'])} to {_pts(b['ci_high'])}", _p(b["p"])])
    if "delong" in test:
        d = test["delong"]
        t_rows.append(["DeLong (examples taken as independent)", _pts(d["auc_a"], False),
                       _pts(d["auc_b"], False), _pts(d["delta"]),
                       f"{_pts(d['delta'] - 1.96 * d['se'])} to "
                       f"{_pts(d['delta'] + 1.96 * d['se'])}" if math.isfinite(d["se"])
                       else "undefined", _p(d["p"])])
    energy = {k: {g["energy"]: g for g in subgroup_auc(r["predictions"], "energy")}
              for k, r in runs.items()}
    e_rows = []
    for e in sorted(set(energy["raw"]) | set(energy["harmonised"])):
        a = energy["raw"].get(e, {}).get("auc", float("nan"))
        b_ = energy["harmonised"].get(e, {}).get("auc", float("nan"))
        n = energy["harmonised"].get(e, energy["raw"].get(e, {})).get("n", 0)
        e_rows.append({"energy": e, "n": n, "raw": pct(a), "harmonised": pct(b_),
                       "delta (points)": "n/a" if not (math.isfinite(a) and math.isfinite(b_))
                       else f"{100 * (b_ - a):+.2f}"})
    _write_csv(out / "ablation.csv", rows + [{"metric": f"{auc_name} "
                                              f"({r['energy']} energy, pooled)",
                                              "raw": r["raw"], "harmonised": r["harmonised"],
                                              "delta (points)": r["delta (points)"]}
                                             for r in e_rows])
    (out / "ablation.json").write_text(strict_dumps({"metrics": rows, "paired_test": test,
                                                     "energy": e_rows}, indent=2))
    plot_roc([("raw", runs["raw"]), ("harmonised", runs["harmonised"])],
             out / "ablation_roc.png", per_fold=False,
             title=f"raw vs harmonised: {run_title(cfg)}")
    rel = os.path.relpath
    md = [f"# Harmonisation ablation: {run_title(cfg)}", "",
          f"raw: `{rel(runs['raw']['out'], out)}` ({runs['raw']['config']['shards']}), "
          f"harmonised: `{rel(runs['harmonised']['out'], out)}` "
          f"({runs['harmonised']['config']['shards']}); same configuration, "
          f"{len(runs['raw']['folds'])} / {len(runs['harmonised']['folds'])} folds"
          + _split_note(runs["raw"]["plan"]) + ".", "",
          "## Mean ± std over folds (%)", "",
          _md_table(list(rows[0]), [list(r.values()) for r in rows]), "",
          f"## Paired test of the pooled out-of-fold {auc_name} ({test['n']} examples of "
          f"{test['patients']} patients predicted by both runs; %)", ""]
    if t_rows:
        md += [_md_table(["test", "raw", "harmonised", "delta (points)", "95 % CI of delta",
                          "p"], t_rows), ""]
    else:
        md += ["No example was predicted by both runs (were the shards made from the same "
               "images with the same salt?): no paired test.", ""]
    if test["label_mismatches"]:
        md += [f"{test['label_mismatches']} examples with different labels in the two runs "
               "were left out of the test.", ""]
    md += [f"## Energy-wise {auc_name} (pooled test predictions, %)", "",
           _md_table(list(e_rows[0]) if e_rows else ["energy"],
                     [list(r.values()) for r in e_rows]), "",
           "![mean ROC raw vs harmonised](ablation_roc.png)", ""]
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    return {"metrics": rows, "paired_test": test, "energy": e_rows}


# ------------------------------------------------------------------------------ combined

def write_combined_report(run_dirs: Sequence[str | Path], ablation_dirs: Sequence[str | Path],
                          path: str | Path, title: str = "mammotrain: all configurations",
                          notes: str = "") -> str:
    """One Markdown report: a summary table per task over the given runs (the paper's
    format), energy-wise AUC per run, and each ablation's table. Returns the text."""
    path = Path(path)
    runs = []
    for d in run_dirs:
        try:
            r = load_run(d)
        except FileNotFoundError as exc:
            runs.append((Path(d), None, str(exc)))
            continue
        runs.append((Path(d), r, ""))
    md = [f"# {title}", ""]
    if notes:
        md += [notes, ""]
    by_task: dict[str, list] = {}
    for d, r, err in runs:
        key = r["config"]["task"] if r else "unreadable"
        by_task.setdefault(key, []).append((d, r, err))
    for task_name, items in by_task.items():
        md += [f"## {task_name}", ""]
        table_rows, header = [], None
        for d, r, err in items:
            if r is None or not r["folds"]:
                md.append(f"- `{d}`: no results ({err or 'no finished fold'})")
                continue
            row = summary_row(r)
            energy = {g["energy"]: g["auc"] for g in subgroup_auc(r["predictions"], "energy")}
            auc_name = get_task(r["config"]["task"]).metric_label("auc")
            row[f"{auc_name} low energy"] = pct(energy.get("low", float("nan")))
            row[f"{auc_name} high energy"] = pct(energy.get("high", float("nan")))
            row["report"] = f"[{d.name}]({os.path.relpath(d / 'summary.md', path.parent)})"
            header = header or list(row)
            table_rows.append([row.get(h, "") for h in header])
        if table_rows:
            md += [_md_table(header, table_rows), ""]
    for a in ablation_dirs:
        f = Path(a) / "ablation.md"
        if f.exists():
            body = f.read_text().splitlines()
            md += ["## " + body[0].lstrip("# ").strip(), ""]
            md += [ln.replace("](ablation_roc.png)",
                              f"]({os.path.relpath(Path(a) / 'ablation_roc.png', path.parent)})")
                   .replace("## ", "### ") for ln in body[1:]]
            md.append("")
    text = "\n".join(md) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
