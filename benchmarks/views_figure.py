"""Single-, two- and four-view runs side by side: pooled out-of-fold AUC with its 95 % CI.

    python benchmarks/views_figure.py RUN_1V RUN_2V RUN_4V -o views.png

Each RUN is a finished ``mammotrain cv`` folder (its ``summary.json``); prints a Markdown
table (views, unit, n, pooled AUC [95 % CI], mean fold AUC) and draws the AUCs with their
intervals. Values in %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    auc = s["pooled"]["values"]["auc"]
    folds = [f.get("auc") for f in s["per_fold"]] if isinstance(s["per_fold"], list) else []
    folds = [v for v in folds if isinstance(v, (int, float))]
    return {"views": cfg["config"]["views"], "unit": "image" if cfg["config"]["views"] == 1
            else "breast", "n": s["pooled"]["n"], "auc": auc["value"],
            "lo": auc["ci_low"], "hi": auc["ci_high"],
            "fold_mean": sum(folds) / len(folds) if folds else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args()
    rows = [row(r) for r in a.runs]
    print("| views | unit | n | pooled AUC [95 % CI] | mean fold AUC |")
    print("|---|---|---|---|---|")
    for r in rows:
        fm = f"{100 * r['fold_mean']:.1f}" if r["fold_mean"] is not None else "-"
        print(f"| {r['views']} | {r['unit']} | {r['n']} | {100 * r['auc']:.1f} "
              f"[{100 * r['lo']:.1f}-{100 * r['hi']:.1f}] | {fm} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 2.6), dpi=100)
    x = list(range(len(rows)))
    ax.errorbar(x, [100 * r["auc"] for r in rows],
                yerr=[[100 * (r["auc"] - r["lo"]) for r in rows],
                      [100 * (r["hi"] - r["auc"]) for r in rows]], fmt="o", capsize=4)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{r['views']}-view\n(n={r['n']} {r['unit']}s)" for r in rows],
                  fontsize=7)
    ax.set_ylabel("pooled out-of-fold AUC (%)", fontsize=7)
    ax.set_ylim(0, 100)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(a.out)


if __name__ == "__main__":
    main()
