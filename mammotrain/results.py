"""One results table over many runs, laid out like the LUMINA paper's tables: a row per
task x views x backbone x input size, raw and harmonised side by side, the paired p-value
between them (``mammotrain compare RUN... --out DIR`` and the end of ``make train-all``).

Writes ``DIR/results.md`` (the tables), ``DIR/results.png`` (the same tables as a figure)
and ``DIR/results.json`` (the numbers). Every value comes from the same functions as each
run's ``summary.md`` / ``summary.json``: the pooled out-of-fold values with their 95 %
patient-level bootstrap intervals (:func:`mammotrain.report.pooled_metrics`, same seed),
the fold mean ± std (:func:`mammotrain.report.summarize`) and, for a raw / harmonised
pair, the ablation's paired test (:func:`mammotrain.compare.paired_test`; detection:
:func:`mammotrain.detection_metrics.detection_paired_bootstrap`).

A run is raw or harmonised by its shards (``config.json`` of the shard folder: a
harmonisation reference or none); runs whose options are equal except the shards (and
the options that may differ on resume: output folder, device, workers, ...) are one row.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from .compare import paired_test
from .config import RESUME_FREE
from .detection_metrics import detection_paired_bootstrap
from .jsonio import dumps as strict_dumps
from .jsonio import json_safe, write_text
from .report import (N_BOOT_PAIRED, ci_text, load_run, md_table, pooled_metrics, scored_unit,
                     size_text, summarize)
from .tasks import get_task

KINDS = ("raw", "harmonised")
#: the paper's row order, then any other task
TASK_ORDER = ("diagnosis", "birads2", "birads3", "density", "detection")
TASK_NAMES = {"diagnosis": "Diagnosis", "birads2": "BI-RADS 2-class",
              "birads3": "BI-RADS 3-class", "density": "Density",
              "detection": "Detection (DETR)"}
VIEW_NAMES = {1: "single", 2: "two", 4: "four"}
#: the columns per side: classification (the paper's ACC, AUC, F1) and detection
COLUMNS = {"classification": ("acc", "auc", "f1"),
           "detection": ("map50", "map25", "recall25")}
LABELS = {"acc": "ACC", "auc": "AUC", "f1": "F1", "map50": "mAP@.5", "map25": "mAP@.25",
          "recall25": "R@.25"}
#: the metric of the paired p-value per table
P_METRIC = {"classification": "auc", "detection": "map25"}
#: a missing run's (or test's) cell
MISSING = "—"
#: options that do not make two runs different configurations
PAIR_FREE = tuple(RESUME_FREE) + ("shards",)


# ------------------------------------------------------------------------------ loading

def shard_kind(run: dict[str, Any]) -> tuple[str, str]:
    """('raw' or 'harmonised', '' or how it was guessed) of a run, from its shard folder's
    ``config.json`` (a harmonisation reference: harmonised). When that file is gone, the
    run folder's name decides ('raw' in it: raw), else harmonised, and the note says so."""
    src = Path(run["config"]["shards"]) / "config.json"
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict):
        prep = (doc.get("config") or {}).get("prep") or {}
        return ("harmonised" if prep.get("reference") else "raw"), ""
    raw = any(p.lower().startswith("raw") for p in Path(run["out"]).parts[-2:])
    return ("raw" if raw else "harmonised"), f"{src} not found: taken as " \
        f"{'raw' if raw else 'harmonised'} from the run folder's name"


def pair_key(cfg: dict[str, Any]) -> str:
    """What makes two runs one row: every option but :data:`PAIR_FREE`."""
    return strict_dumps({k: v for k, v in sorted(cfg.items()) if k not in PAIR_FREE})


def load_entries(run_dirs: Sequence[str | Path]) -> tuple[list[dict], list[str]]:
    """(runs with at least one finished fold: {'dir', 'run', 'kind', 'note', 'key'},
    one line per folder left out and why)."""
    entries, skipped = [], []
    for d in run_dirs:
        try:
            run = load_run(d)
        except FileNotFoundError as exc:
            skipped.append(f"`{d}`: {exc}")
            continue
        if not run["folds"]:
            skipped.append(f"`{d}`: no finished fold (foldK/metrics.json)")
            continue
        kind, note = shard_kind(run)
        entries.append({"dir": Path(d), "run": run, "kind": kind, "note": note,
                        "key": pair_key(run["config"])})
    return entries, skipped


def ablation_pair(run_dirs: Sequence[str | Path]) -> tuple[Path, Path] | None:
    """(raw, harmonised) folders when ``run_dirs`` are two finished runs of one
    configuration: by their shards where those differ, else in the order given; else
    None."""
    if len(run_dirs) != 2:
        return None
    entries, _ = load_entries(run_dirs)
    if len(entries) != 2 or entries[0]["key"] != entries[1]["key"]:
        return None
    if entries[0]["kind"] == "harmonised" and entries[1]["kind"] == "raw":
        entries.reverse()
    return entries[0]["dir"], entries[1]["dir"]


def _order(cfg: dict[str, Any]) -> tuple:
    t = cfg["task"]
    size = cfg["size"] if isinstance(cfg["size"], list) else [cfg["size"]]
    return (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER), t, cfg["views"],
            cfg["backbone"], [int(s) for s in size])


def pair_runs(entries: list[dict]) -> list[dict[str, dict | None]]:
    """Rows {'raw': entry or None, 'harmonised': entry or None}: the runs of one
    configuration paired in the order given (a configuration with two harmonised runs and
    one raw run gives two rows, the second without raw), rows in the paper's order."""
    groups: dict[str, dict[str, list]] = {}
    for e in entries:
        groups.setdefault(e["key"], {k: [] for k in KINDS})[e["kind"]].append(e)
    rows = []
    for g in groups.values():
        for i in range(max(len(g["raw"]), len(g["harmonised"]))):
            rows.append({k: (g[k][i] if i < len(g[k]) else None) for k in KINDS})
    return sorted(rows, key=lambda r: _order((r["harmonised"] or r["raw"])["run"]["config"]))


# ---------------------------------------------------------------------------- numbers

def _side(entry: dict | None) -> dict[str, Any] | None:
    """The pooled values and fold statistics of one run (None: no such run)."""
    if entry is None:
        return None
    run = entry["run"]
    pooled = pooled_metrics(run, seed=int(run["config"].get("seed", 0)))
    folds = summarize(run["folds"])
    return {"run": str(entry["dir"]), "folds": len(run["folds"]), "n": pooled["n"],
            "unit": scored_unit(run),
            "patients": pooled["patients"], "pooled": pooled["values"],
            "fold_mean": {m: {"mean": s.mean, "std": s.std, "text": s.text()}
                          for m, s in folds.items()}, "note": entry["note"]}


def _rows_by_uid(run: dict[str, Any]) -> dict[str, dict]:
    return {r["uid"]: r for r in run["predictions"]}


def paired_p(raw: dict, harm: dict, table: str) -> dict[str, Any]:
    """The raw vs harmonised test of a row: classification the ablation's
    (:func:`~mammotrain.compare.paired_test`: patient-level paired bootstrap of the AUC,
    DeLong for binary tasks), detection the paired bootstrap of mAP@.25 over the images
    both runs predicted with the same lesions. 'p' = the bootstrap's p-value."""
    seed = int(harm["run"]["config"].get("seed", 0))
    if table == "classification":
        t = paired_test(raw["run"], harm["run"], seed=seed)
        return {**t, "p": t.get("bootstrap", {}).get("p", math.nan), "metric": "auc"}
    a, b = _rows_by_uid(raw["run"]), _rows_by_uid(harm["run"])
    uids = sorted(u for u in a if u in b and a[u]["gt_boxes"] == b[u]["gt_boxes"])
    if not uids:
        return {"n": 0, "p": math.nan, "metric": P_METRIC[table]}
    cols = ("boxes", "box_scores", "gt_boxes")
    boot = detection_paired_bootstrap(tuple([a[u][c] for u in uids] for c in cols),
                                      tuple([b[u][c] for u in uids] for c in cols),
                                      [a[u]["patient"] for u in uids], P_METRIC[table],
                                      n_boot=N_BOOT_PAIRED, seed=seed)
    return {"n": len(uids), "bootstrap": boot, "p": boot["p"], "metric": P_METRIC[table]}


def result_rows(pairs: list[dict[str, dict | None]]) -> list[dict[str, Any]]:
    """One dict per row: table ('classification' or 'detection'), task, views, backbone,
    input, the raw and harmonised sides (:func:`_side`; None = no such run) and the paired
    test (None without both)."""
    out = []
    for pair in pairs:
        cfg = (pair["harmonised"] or pair["raw"])["run"]["config"]
        table = "detection" if get_task(cfg["task"]).kind == "detection" else "classification"
        row = {"table": table, "task": cfg["task"], "views": cfg["views"],
               "backbone": cfg["backbone"], "input": size_text(cfg["size"]),
               **{k: _side(pair[k]) for k in KINDS}, "paired": None}
        if pair["raw"] is not None and pair["harmonised"] is not None:
            row["paired"] = paired_p(pair["raw"], pair["harmonised"], table)
        out.append(row)
    return out


# ------------------------------------------------------------------------------ cells

def p_text(p: float | None) -> str:
    """'0.012', '< 0.001', or :data:`MISSING`."""
    if p is None or not math.isfinite(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pooled_cell(side: dict | None, metric: str) -> str:
    """'85.04 (80.10-89.90)': the run's pooled value and 95 % CI (%, as its summary.md
    gives them), 'undefined', or :data:`MISSING` without the run."""
    if side is None:
        return MISSING
    return ci_text(side["pooled"].get(metric), label=False)


def fold_cell(side: dict | None, metric: str) -> str:
    """'85.04 ± 3.10' over folds (the paper's statistic), or :data:`MISSING`."""
    return MISSING if side is None else side["fold_mean"][metric]["text"]


def row_label(r: dict[str, Any]) -> list[str]:
    return [TASK_NAMES.get(r["task"], r["task"]), VIEW_NAMES.get(r["views"], str(r["views"])),
            r["backbone"], r["input"]]


def table_cells(rows: list[dict[str, Any]], table: str, pooled: bool = True
                ) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of one table: the row label, per side the columns of ``table``
    (pooled with CI, or fold mean ± std) and, for pooled, the paired p-value."""
    cols = COLUMNS[table]
    header = ["Task", "Views", "Backbone", "Input"] + [f"{k} {LABELS[m]}" for k in KINDS
                                                       for m in cols]
    cell = pooled_cell if pooled else fold_cell
    body = []
    for r in rows:
        if r["table"] != table:
            continue
        line = row_label(r) + [cell(r[k], m) for k in KINDS for m in cols]
        if pooled:
            line.append(p_text(r["paired"]["p"]) if r["paired"] else MISSING)
        body.append(line)
    if pooled:
        header.append(f"p ({LABELS[P_METRIC[table]]})")
    return header, body


# ----------------------------------------------------------------------------- output

def write_results(run_dirs: Sequence[str | Path], out: str | Path,
                  title: str = "Results: raw vs harmonised", notes: str = ""
                  ) -> dict[str, Any]:
    """``OUT/results.md``, ``OUT/results.png`` and ``OUT/results.json`` over the runs in
    ``run_dirs`` (folders without a finished fold are listed, not fatal). Returns the
    JSON document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, skipped = load_entries(run_dirs)
    if not entries:
        raise FileNotFoundError("no run with a finished fold among "
                                f"{', '.join(map(str, run_dirs)) or 'no folder'}"
                                + (f" ({'; '.join(skipped)})" if skipped else ""))
    rows = result_rows(pair_runs(entries))
    plot_results(rows, out / "results.png", title)
    write_text(out / "results.md", "\n".join(results_md(rows, skipped, out, title, notes))
               + "\n")
    doc = json_safe({"title": title, "rows": rows, "skipped": skipped})
    write_text(out / "results.json", strict_dumps(doc, indent=2))
    return doc


def plot_results(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """``results.png``: the pooled tables of results.md (classification, then detection) as
    a figure, one matplotlib table each, the raw columns shaded apart from the harmonised."""
    from .figures import pyplot

    tables = [(name, *table_cells(rows, t)) for t, name in
              (("classification", "Classification"), ("detection", "Detection"))]
    tables = [t for t in tables if t[2]]
    plt = pyplot()
    heights = [len(body) + 2 for _, _, body in tables]
    fig, axes = plt.subplots(len(tables), 1, squeeze=False, dpi=150,
                             figsize=(11, 0.6 + 0.25 * sum(heights)),
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, header, body) in zip(axes[:, 0], tables):
        ax.axis("off")
        tab = ax.table(cellText=body, colLabels=header, loc="upper center", cellLoc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        tab.auto_set_column_width(list(range(len(header))))
        tab.scale(1, 1.25)
        for (i, j), c in tab.get_celld().items():
            if i == 0:
                c.set_text_props(weight="bold")
            if 4 <= j < 4 + len(COLUMNS["classification"]):
                c.set_facecolor("#f0f0f0")
        head = f"{title}\n" if ax is axes[0, 0] else ""
        ax.set_title(f"{head}{name}: pooled out-of-fold %, 95 % CI in brackets", fontsize=9,
                     loc="left")
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)  # the tables' own width
    plt.close(fig)


def _link(side: dict | None, out: Path) -> str:
    if side is None:
        return MISSING
    path = os.path.relpath(Path(side["run"]) / "summary.md", out)
    folds = f"{side['folds']} fold{'s' if side['folds'] != 1 else ''}"
    return f"[{Path(side['run']).name}]({path}) ({folds}, {side['n']} {side['unit']}s of " \
           f"{side['patients']} patients)"


def results_md(rows: list[dict[str, Any]], skipped: list[str], out: Path, title: str,
               notes: str) -> list[str]:
    """The lines of results.md."""
    md = [f"# {title}", ""] + ([notes, ""] if notes else [])
    md += ["Pooled out-of-fold values (every test fold's predictions together), %, with the "
           "95 % CI of a patient-level bootstrap in brackets: the values of each run's "
           "`summary.md`. AUC and F1 are macro averages for multi-class tasks. p: raw vs "
           "harmonised, paired bootstrap over the patients both runs predicted "
           f"({N_BOOT_PAIRED} resamples). {MISSING}: no such run (no raw twin: no p).", ""]
    for table, name in (("classification", "Classification"), ("detection", "Detection")):
        header, body = table_cells(rows, table)
        if body:
            md += [f"## {name}", "", md_table(header, body), ""]
    folds = [table_cells(rows, t, pooled=False) for t in COLUMNS]
    if any(body for _, body in folds):
        md += ["## Mean ± std over test folds (the paper's statistic, %)", ""]
        md += [ln for header, body in folds if body for ln in (md_table(header, body), "")]
    md += ["## Runs", "", md_table(["Task", "Views", "Backbone", "Input", "raw run",
                                    "harmonised run"],
                                   [row_label(r) + [_link(r[k], out) for k in KINDS]
                                    for r in rows]), ""]
    notes_ = [f"- {s['run']}: {s['note']}" for r in rows for k in KINDS
              if (s := r[k]) and s["note"]]
    notes_ += [f"- {s} (left out)" for s in skipped]
    if notes_:
        md += ["Notes:", ""] + notes_ + [""]
    md += ["![results table](results.png)", ""]
    return md
