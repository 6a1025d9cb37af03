"""Reports from run folders: per-fold and summary tables (LUMINA format), ROC curves,
energy-wise and per-vendor AUC (reports over several runs: :mod:`mammotrain.compare`).

A run folder is what :func:`mammotrain.engine.fit.run_cv` writes (``config.json`` and
``foldK/{metrics.json, predictions.parquet, gradcam.png}``). Everything here reads those
files only, so a report can be rebuilt without retraining (``mammotrain report OUT``).
Values in tables are percentages. Per fold, an undefined value (AUC of a fold with one class
only, ...) is shown as undefined with the reason, and a fold mean is only given when every
fold is defined (``mean ± std``, population std) - never a mean over the defined folds that
hides the others. Beside it: the pooled out-of-fold value (every test fold's predictions
together) with a 95 % confidence interval from a patient-level bootstrap, the sensitivity at
90 % specificity, and for diagnosis RSNA's probabilistic F1 per breast. JSON outputs are
strict (``null`` for undefined values).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from .calibration import calibration_section, run_calibration
from .detection_metrics import (DETECTION_METRICS, detection_bootstrap_ci, detection_metrics,
                                mean_box_baseline)
from .figures import pyplot
from .jsonio import dumps as strict_dumps
from .jsonio import json_safe, write_csv, write_text
from .metrics import (METRICS, binary_operating_metrics, bootstrap_ci, classification_metrics,
                      macro_roc, mean_std, per_breast, probabilistic_f1, undefined_reason)
from .splits import split_text
from .tasks import get_task

GRID = np.linspace(0.0, 1.0, 201)
#: bootstrap resamples for confidence intervals and for the paired ablation test
N_BOOT, N_BOOT_PAIRED = 1000, 2000


# ------------------------------------------------------------------------------ loading

def load_run(out: str | Path) -> dict[str, Any]:
    """{'out', 'config', 'plan', 'folds': [metrics dicts], 'predictions': [rows]}; folds
    without ``metrics.json`` + ``predictions.parquet`` are skipped."""
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
    resamples): AUC, ACC, F1, sensitivity (recall), specificity, binary tasks sensitivity at
    90 % specificity; diagnosis tasks pF1 (RSNA's probabilistic F1, one row per breast: the
    mean score of its views, no interval); detection mAP@.5, mAP@.25 and recall@.25
    (:func:`pooled_detection`). Fractions, not percent."""
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
    if task.kind == "detection":
        values.update(pooled_detection(rows, groups, n_boot, seed))
        values["map50_baseline"] = {"value": mean_box_baseline(rows), "ci_low": math.nan,
                                    "ci_high": math.nan}
    return {"n": int(len(y)), "patients": len(set(groups)),
            "reason": undefined_reason(y, task.num_classes, task.classes), "values": values,
            "underpowered": underpowered(y, task.num_classes)}


def pooled_detection(rows: Sequence[dict[str, Any]], groups: Sequence[str], n_boot: int,
                     seed: int) -> dict[str, dict[str, float]]:
    """mAP@.5, mAP@.25 and recall@.25 of every test image together: the value as each fold's
    (:func:`~mammotrain.detection_metrics.detection_metrics`, COCO backend) with its 95 %
    patient-level bootstrap interval
    (:func:`~mammotrain.detection_metrics.detection_bootstrap_ci`). Fractions."""
    args = ([r["boxes"] for r in rows], [r["box_scores"] for r in rows],
            [r["gt_boxes"] for r in rows])
    point = detection_metrics(*args)
    ci = detection_bootstrap_ci(*args, groups, n_boot=n_boot, seed=seed)
    return {k: {"value": point[k], "ci_low": lo, "ci_high": hi} for k, (lo, hi) in ci.items()}


#: Below these pooled test counts a report says it is under-powered: fewer test examples
#: overall, or fewer of the rarest class, than this.
MIN_POOLED_TEST = 30
MIN_CLASS_TEST = 10


def scored_unit(run: dict[str, Any]) -> str:
    """What one pooled prediction is: the plan's unit (image, breast), except for four-view
    runs, planned by exam but scored per breast."""
    if int(run["config"].get("views", 1)) == 4:
        return "breast"
    return run["plan"].get("unit", "example")


def underpowered(y: np.ndarray, num_classes: int) -> str:
    """Why the pooled test set is too small to support its figures ('' when it is not):
    fewer than ``MIN_POOLED_TEST`` examples or fewer than ``MIN_CLASS_TEST`` of a class."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)
    if len(y) < MIN_POOLED_TEST or counts.min() < MIN_CLASS_TEST:
        return (f"only {len(y)} test examples (per class {counts.tolist()}); below "
                f"{MIN_POOLED_TEST} examples or {MIN_CLASS_TEST} of a class no figure here, "
                "a perfect one included, is evidence of anything")
    return ""


POOLED_LABELS = {"auc": "AUC", "acc": "ACC", "f1": "F1", "recall": "Sensitivity",
                 "specificity": "Specificity",
                 "sens_at_90spec": "Sensitivity at 90 % specificity",
                 "pf1": "pF1 (RSNA, per breast)", "map50": "mAP@0.5", "map25": "mAP@0.25",
                 "recall25": "Recall@0.25",
                 "map50_baseline": "mAP@0.5 of the baseline (training folds' mean box)"}


def ci_text(v: dict[str, float], label: bool = True) -> str:
    """'81.20 (95 % CI 74.10-87.00)' in percent (``label`` False: '81.20 (74.10-87.00)', a
    table cell); 'undefined' for NaN."""
    if v is None or v.get("value") is None or not math.isfinite(v["value"]):
        return "undefined"
    if not (math.isfinite(v.get("ci_low", math.nan)) and math.isfinite(v.get("ci_high", math.nan))):
        return f"{100 * v['value']:.2f}"
    return (f"{100 * v['value']:.2f} ({'95 % CI ' if label else ''}{100 * v['ci_low']:.2f}-"
            f"{100 * v['ci_high']:.2f})")


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
    return (f"{cfg['task']} {cfg['views']}-view, {cfg['backbone']}{mode}, {size_text(cfg['size'])}")


def size_text(size: Any) -> str:
    """``224²`` (square) or ``1024x512`` (rows x cols)."""
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] != size[1]:
        return f"{size[0]}x{size[1]}"
    return f"{size[0] if isinstance(size, (list, tuple)) else size}²"


# ------------------------------------------------------------------------------ figures

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
    plt = pyplot()
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


# ------------------------------------------------------------------------------- tables

def write_table_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        write_text(path, "")
        return
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]
    write_csv(path, rows, cols)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
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
    if "map50_baseline" in pooled["values"]:
        row["pooled mAP@0.5"] = ci_text(pooled["values"]["map50"])
        row["baseline mAP@0.5 (mean box)"] = ci_text(pooled["values"]["map50_baseline"])
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


def split_note(plan: dict) -> str:
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
    """metrics_per_fold.csv, summary.{md,csv,json}, subgroup_auc.csv, roc.png and, for a
    calibrated classifier, reliability.png (:mod:`mammotrain.calibration`) for a run."""
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
    row, energy, vendor = _write_run_tables(out, run, task, s, pooled, per_fold)
    plot_roc([(cfg["backbone"], run)], out / "roc.png", title=run_title(cfg))
    md = _run_intro(run, task, texts, no_val) + _run_sections(out, run, task, s, row, pooled,
                                                              per_fold, energy, vendor)
    calibration = run_calibration(run)
    md += calibration_section(calibration, out, run_title(cfg))
    write_text(out / "summary.md", "\n".join(md) + "\n")
    summary = {"title": run_title(cfg), "config": cfg, "folds": len(run["folds"]),
               "summary": {m: s[m].to_dict() for m in task.metrics},
               "split_by": split_by, "split": run["plan"].get("split") or "kfold",
               "per_fold": [{"fold": f["fold"], "test_group": names.get(int(f["fold"])),
                             "selected_epoch": f.get("selected_epoch"),
                             "selection": f.get("selection"),
                             "undefined_reason": reasons.get(int(f["fold"])),
                             **{m: f.get(m) for m in task.metrics}} for f in run["folds"]],
               "pooled": pooled, "no_validation_folds": no_val,
               "energy_auc": energy, "vendor_auc": vendor, "calibration": calibration}
    summary = json_safe(summary)  # what summary.json holds: null for undefined values
    write_text(out / "summary.json", strict_dumps(summary, indent=2))
    return summary


def _write_run_tables(out: Path, run: dict[str, Any], task, s: dict[str, FoldStat],
                      pooled: dict[str, Any], per_fold: list[dict[str, Any]]
                      ) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """``metrics_per_fold.csv``, ``summary.csv`` and ``subgroup_auc.csv``; returns the
    summary row and the energy- and vendor-wise AUC."""
    write_table_csv(out / "metrics_per_fold.csv",
               [{k: ("" if v == "undefined" else v) for k, v in r.items()} for r in per_fold])
    row = summary_row(run, pooled)
    write_table_csv(out / "summary.csv", [{**row, **{f"{task.metric_label(m)} mean": s[m].mean
                                                for m in task.metrics},
                                      **{f"{task.metric_label(m)} std": s[m].std
                                         for m in task.metrics}}])
    energy = subgroup_auc(run["predictions"], "energy")
    vendor = subgroup_auc(run["predictions"], "manufacturer")
    write_table_csv(out / "subgroup_auc.csv",
               [{"group": "energy", "value": g["energy"], "n": g["n"], "classes": g["classes"],
                 "auc": g["auc"]} for g in energy]
               + [{"group": "manufacturer", "value": g["manufacturer"], "n": g["n"],
                   "classes": g["classes"], "auc": g["auc"]} for g in vendor])
    return row, energy, vendor


def _run_intro(run: dict[str, Any], task, texts: list[str], no_val: list[int]) -> list[str]:
    """summary.md's title, configuration, selection, split and example counts."""
    cfg = run["config"]
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
    return md


def _run_sections(out: Path, run: dict[str, Any], task, s: dict[str, FoldStat],
                  row: dict[str, Any], pooled: dict[str, Any], per_fold: list[dict[str, Any]],
                  energy: list[dict], vendor: list[dict]) -> list[str]:
    """summary.md's tables (summary, pooled, per fold, energy, vendor) and figures."""
    auc_name = task.metric_label("auc")
    undefined_any = sorted({f for m in task.metrics for f in s[m].undefined})
    md = ["## Summary (mean ± std over folds, %)", "",
           md_table(list(row), [list(row.values())]), ""]
    if undefined_any:
        md += [f"Fold {', '.join(map(str, undefined_any))} has undefined values (see the "
               "per-fold table), so no mean over folds is given for them; the pooled "
               "out-of-fold values below use every test prediction.", ""]
    md += [f"## Pooled out-of-fold ({pooled['n']} {scored_unit(run)}s of "
           f"{pooled['patients']} patients, every test fold's predictions; 95 % CI: "
           f"patient-level bootstrap, {N_BOOT} resamples; %)", ""]
    if pooled.get("reason"):
        md += [f"Note: {pooled['reason']}.", ""]
    if pooled.get("underpowered"):
        md += [f"**Warning: under-powered:** {pooled['underpowered']}.", ""]
    md += [md_table(["metric", "value"],
                     [[("" if task.binary or k not in ("auc", "f1", "recall", "specificity")
                        else "macro-") + POOLED_LABELS[k], ci_text(v)]
                      for k, v in pooled["values"].items()]), "",
           "## Per fold (%)", "", md_table(list(per_fold[0]),
                                            [list(r.values()) for r in per_fold]), "",
           f"## {auc_name} by energy (pooled test predictions of all folds)", "",
           md_table(["energy", "n", "classes", auc_name],
                     [[g["energy"], g["n"], g["classes"], pct(g["auc"])] for g in energy]), "",
           f"## {auc_name} by vendor (pooled)", "",
           md_table(["manufacturer", "n", "classes", auc_name],
                     [[g["manufacturer"], g["n"], g["classes"], pct(g["auc"])]
                      for g in vendor]), "",
           "## Figures", "", "![ROC curves per fold and mean](roc.png)", ""]
    md += [f"![Grad-CAM fold {f['fold']}](fold{f['fold']}/gradcam.png)" for f in run["folds"]
           if (out / f"fold{f['fold']}" / "gradcam.png").exists()]
    md += [f"![predicted (red) vs true (green) boxes, fold {f['fold']}]"
           f"(fold{f['fold']}/detections.png)" for f in run["folds"]
           if (out / f"fold{f['fold']}" / "detections.png").exists()]
    return md
