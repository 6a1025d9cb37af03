"""Reports over several runs: the raw-vs-harmonised ablation (fold means with deltas, a
paired test over the same patients, overlaid ROC curves, energy-wise AUC) and the combined
``train-all`` report (a summary table per task over many runs). Reads run folders only
(:func:`mammotrain.report.load_run`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .jsonio import dumps as strict_dumps
from .jsonio import write_text
from .metrics import delong_test, paired_bootstrap
from .report import (N_BOOT_PAIRED, load_run, md_table, pct, plot_roc, run_title,
                     split_note, subgroup_auc, summarize, summary_row, write_table_csv)
from .tasks import get_task


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
    e_rows = _energy_rows(runs)
    write_table_csv(out / "ablation.csv", rows + [{"metric": f"{auc_name} "
                                              f"({r['energy']} energy, pooled)",
                                              "raw": r["raw"], "harmonised": r["harmonised"],
                                              "delta (points)": r["delta (points)"]}
                                             for r in e_rows])
    write_text(out / "ablation.json", strict_dumps({"metrics": rows, "paired_test": test,
                                                     "energy": e_rows}, indent=2))
    plot_roc([("raw", runs["raw"]), ("harmonised", runs["harmonised"])],
             out / "ablation_roc.png", per_fold=False,
             title=f"raw vs harmonised: {run_title(cfg)}")
    write_text(out / "ablation.md",
               "\n".join(_ablation_md(out, runs, rows, test, e_rows, auc_name)) + "\n")
    return {"metrics": rows, "paired_test": test, "energy": e_rows}


def _test_rows(test: dict[str, Any]) -> list[list[str]]:
    """The paired-test table of ablation.md (bootstrap; DeLong for binary tasks)."""
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
    return t_rows


def _energy_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Energy-wise pooled AUC of the raw and harmonised runs with the delta (points)."""
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
    return e_rows


def _ablation_md(out: Path, runs: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
                 test: dict[str, Any], e_rows: list[dict[str, Any]], auc_name: str
                 ) -> list[str]:
    """The lines of ablation.md."""
    cfg = runs["harmonised"]["config"]
    t_rows = _test_rows(test)
    rel = os.path.relpath
    md = [f"# Harmonisation ablation: {run_title(cfg)}", "",
          f"raw: `{rel(runs['raw']['out'], out)}` ({runs['raw']['config']['shards']}), "
          f"harmonised: `{rel(runs['harmonised']['out'], out)}` "
          f"({runs['harmonised']['config']['shards']}); same configuration, "
          f"{len(runs['raw']['folds'])} / {len(runs['harmonised']['folds'])} folds"
          + split_note(runs["raw"]["plan"]) + ".", "",
          "## Mean ± std over folds (%)", "",
          md_table(list(rows[0]), [list(r.values()) for r in rows]), "",
          f"## Paired test of the pooled out-of-fold {auc_name} ({test['n']} examples of "
          f"{test['patients']} patients predicted by both runs; %)", ""]
    if t_rows:
        md += [md_table(["test", "raw", "harmonised", "delta (points)", "95 % CI of delta",
                          "p"], t_rows), ""]
    else:
        md += ["No example was predicted by both runs (were the shards made from the same "
               "images with the same salt?): no paired test.", ""]
    if test["label_mismatches"]:
        md += [f"{test['label_mismatches']} examples with different labels in the two runs "
               "were left out of the test.", ""]
    md += [f"## Energy-wise {auc_name} (pooled test predictions, %)", "",
           md_table(list(e_rows[0]) if e_rows else ["energy"],
                     [list(r.values()) for r in e_rows]), "",
           "![mean ROC raw vs harmonised](ablation_roc.png)", ""]
    return md


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
            md += [md_table(header, table_rows), ""]
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
    write_text(path, text)
    return text
