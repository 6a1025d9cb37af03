"""Reports from run folders: per-fold and summary tables (LUMINA format), ROC curves,
energy-wise and per-vendor AUC, Grad-CAM figures, the raw-vs-harmonised ablation and the
combined ``train-all`` report.

A run folder is what :func:`mammotrain.train.run_cv` writes (``config.json`` and
``foldK/{metrics.json, predictions.parquet, gradcam.png}``). Everything here reads those
files only, so a report can be rebuilt without retraining (``mammotrain report OUT``).
Values in tables are percentages, ``mean ± std`` over folds (population std).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .detection_metrics import DETECTION_METRICS
from .metrics import METRICS, classification_metrics, macro_roc, mean_std
from .tasks import get_task

GRID = np.linspace(0.0, 1.0, 201)


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


def summarize(folds: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, std) over folds (fractions, not percent); detection metrics too."""
    return {m: mean_std([f.get(m, float("nan")) for f in folds])
            for m in METRICS + DETECTION_METRICS}


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


def pm(mean: float, std: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def run_title(cfg: dict[str, Any]) -> str:
    mode = "" if cfg["views"] == 1 else (", shared" if cfg.get("shared", True) else ", independent")
    return (f"{cfg['task']} {cfg['views']}-view, {cfg['backbone']}{mode}, {cfg['size']}²")


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
        auc_m, auc_s = mean_std([f["auc"] for f in run["folds"]])
        ax.plot(GRID, mean, color=c, lw=2,
                label=f"{name} mean (AUC {pm(auc_m, auc_s)})")
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
                    max_boxes: int = 3) -> None:
    """Grid figure of test images at the model input: true boxes (green) and the
    ``max_boxes`` highest-objectness predicted boxes (red, with their score); the title
    gives the label and the malignancy probability. ``rows``: uid -> prediction row."""
    from matplotlib.patches import Rectangle

    from .data import EpochLoader, ShardStream

    if not examples:
        return
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


def summary_row(run: dict[str, Any]) -> dict[str, Any]:
    """One row of the paper's table: configuration and ``mean ± std`` per metric."""
    task = get_task(run["config"]["task"])
    s = summarize(run["folds"])
    row = {"run": run_title(run["config"]), "folds": len(run["folds"])}
    for m in task.metrics:
        row[task.metric_label(m)] = pm(*s[m])
    return row


def write_run_report(out: str | Path) -> dict[str, Any]:
    """metrics_per_fold.csv, summary.{md,csv,json}, subgroup_auc.csv, roc.png for a run."""
    out = Path(out)
    run = load_run(out)
    cfg = run["config"]
    task = get_task(cfg["task"])
    if not run["folds"]:
        raise FileNotFoundError(f"{out}: no finished fold (foldK/metrics.json)")
    s = summarize(run["folds"])
    per_fold = [{"fold": f["fold"], "n_test": f.get("n_test"),
                 "selected_epoch": f.get("selected_epoch"),
                 **{task.metric_label(m): round(100 * f[m], 2) if math.isfinite(f[m]) else None
                    for m in task.metrics}} for f in run["folds"]]
    _write_csv(out / "metrics_per_fold.csv", per_fold)
    row = summary_row(run)
    _write_csv(out / "summary.csv", [{**row, **{f"{task.metric_label(m)} mean": s[m][0]
                                                for m in task.metrics},
                                      **{f"{task.metric_label(m)} std": s[m][1]
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
          f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']:g}, "
          f"seed {cfg['seed']}; {len(run['folds'])} test folds; model selected on a "
          f"patient-grouped validation split of the training folds.", ""]
    if run["plan"]:
        p = run["plan"]
        ex = ", ".join(f"{k} {v}" for k, v in sorted(p.get("excluded", {}).items()) if v)
        md += [f"Examples: {p['examples']} {p['unit']}s of {p['candidates']} "
               f"({p['images']} images); excluded: {ex or 'none'}; classes "
               f"{p.get('class_counts')}.", ""]
    md += ["## Summary (mean ± std over folds, %)", "",
           _md_table(list(row), [list(row.values())]), "",
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
               "summary": {m: {"mean": s[m][0], "std": s[m][1]} for m in task.metrics},
               "energy_auc": energy, "vendor_auc": vendor}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


# ------------------------------------------------------------------------------ ablation

def write_ablation_report(raw: str | Path, harmonized: str | Path, out: str | Path
                          ) -> dict[str, Any]:
    """Raw vs harmonised, same configuration: table with deltas (harmonised - raw, points),
    overlaid mean ROC curves, energy-wise AUC of both. Writes ``OUT/ablation.{md,csv}`` and
    ``OUT/ablation_roc.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {"raw": load_run(raw), "harmonised": load_run(harmonized)}
    cfg = runs["harmonised"]["config"]
    task = get_task(cfg["task"])
    for name, r in runs.items():
        if not r["folds"]:
            raise FileNotFoundError(f"{r['out']}: no finished fold for the ablation ({name})")
    s = {k: summarize(r["folds"]) for k, r in runs.items()}
    rows = []
    for m in task.metrics:
        d = s["harmonised"][m][0] - s["raw"][m][0]
        rows.append({"metric": task.metric_label(m), "raw": pm(*s["raw"][m]),
                     "harmonised": pm(*s["harmonised"][m]),
                     "delta (points)": "n/a" if not math.isfinite(d) else f"{100 * d:+.2f}"})
    energy = {k: {g["energy"]: g for g in subgroup_auc(r["predictions"], "energy")}
              for k, r in runs.items()}
    e_rows = []
    for e in sorted(set(energy["raw"]) | set(energy["harmonised"])):
        a = energy["raw"].get(e, {}).get("auc", float("nan"))
        b = energy["harmonised"].get(e, {}).get("auc", float("nan"))
        n = energy["harmonised"].get(e, energy["raw"].get(e, {})).get("n", 0)
        e_rows.append({"energy": e, "n": n, "raw": pct(a), "harmonised": pct(b),
                       "delta (points)": "n/a" if not (math.isfinite(a) and math.isfinite(b))
                       else f"{100 * (b - a):+.2f}"})
    _write_csv(out / "ablation.csv", rows + [{"metric": f"{task.metric_label('auc')} "
                                              f"({r['energy']} energy, pooled)",
                                              "raw": r["raw"], "harmonised": r["harmonised"],
                                              "delta (points)": r["delta (points)"]}
                                             for r in e_rows])
    plot_roc([("raw", runs["raw"]), ("harmonised", runs["harmonised"])],
             out / "ablation_roc.png", per_fold=False,
             title=f"raw vs harmonised: {run_title(cfg)}")
    rel = os.path.relpath
    md = [f"# Harmonisation ablation: {run_title(cfg)}", "",
          f"raw: `{rel(runs['raw']['out'], out)}` ({runs['raw']['config']['shards']}), "
          f"harmonised: `{rel(runs['harmonised']['out'], out)}` "
          f"({runs['harmonised']['config']['shards']}); same configuration, "
          f"{len(runs['raw']['folds'])} / {len(runs['harmonised']['folds'])} folds.", "",
          "## Mean ± std over folds (%)", "",
          _md_table(list(rows[0]), [list(r.values()) for r in rows]), "",
          f"## Energy-wise {task.metric_label('auc')} (pooled test predictions, %)", "",
          _md_table(list(e_rows[0]) if e_rows else ["energy"],
                    [list(r.values()) for r in e_rows]), "",
          "![mean ROC raw vs harmonised](ablation_roc.png)", ""]
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    return {"metrics": rows, "energy": e_rows}


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
